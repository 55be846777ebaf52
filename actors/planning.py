"""The orchestrator's planner: a request in words turned into a workflow document a person
reviews, run only when asked.

    plan(tenant, request, run=False, input=None, group=None)
        → {"document", "rendered", "attempts", "problems", "run_id", "usage"}

`plan_request` is the pure core (no Ray, no storage): it shows the model the registered agent
types with their payload hints (`AgentSpec.payload_hint`), asks through the model gateway's
`complete` and checks the answer (`ml.llm.planner.plan_workflow`). Guarantees:

- With no model configured, `plan` raises `NoModelConfigured` whose message is
  `NO_MODEL_HINT`, before anything else happens.
- The model is asked as `tenant`: its token budget pays and its usage is recorded under it;
  answers are never cached (temperature 0, `cache_ttl_s` None), so a refused answer is never
  served again. At most `DEFAULT_MAX_ATTEMPTS` calls per plan.
- A plan names only registered agent types and keeps within the platform's workflow limits;
  when no attempt gives one, `PlanRefused` lists each attempt's problem. Model errors
  (`ml.llm.types`) pass through as themselves.
- Nothing runs unless `run` is true; then the document is submitted through `submit_workflow`
  as the same tenant, with an idempotency key derived from the document and the input, so a
  retried call (or the same plan asked to run again with the same input) gives the same run.
- The run's input, when given, is shown to the model as its shape only (field names and value
  kinds), never its values.
- The gateway is found by name on every call (Ray restarts it, a kept handle could be stale);
  none running is `PlatformUnavailable`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from actors.errors import PlatformUnavailable
from ml.llm.planner import DEFAULT_MAX_ATTEMPTS, Plan, plan_workflow, render_plan
from ml.llm.settings import NO_MODEL_HINT, NoModelConfigured
from ml.llm.types import Message
from storage.errors import InvalidRequest
from storage.example_store import check_tenant
from storage.messages import AgentSpec
from storage.workflow_spec import WorkflowLimits

if TYPE_CHECKING:
    from actors.config import OrchestratorConfig
    from storage.workflow_records import RunDetail

GatewayComplete = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""The gateway's `complete`: a request dict in, an answer dict out (see `actors.llm_gateway`)."""

MAX_REQUEST_CHARS = 8000
PLAN_MAX_TOKENS = 4096
"""Room for a plan's JSON (capped by the gateway's `max_tokens_limit`)."""
MAX_HINT_CHARS = 1200
"""A longer payload hint is shown as its field names only."""
MAX_OUTLINE_CHARS = 2000
_OUTLINE_DEPTH = 6
_OUTLINE_KEYS = 40


# ------------------------------------------------------------------------------ pure core

async def plan_request(request: str, *, tenant: str, agents: Sequence[AgentSpec],
                       complete: GatewayComplete, limits: WorkflowLimits,
                       group: str | None = None, run_input: Any = None,
                       max_tokens: int | None = PLAN_MAX_TOKENS,
                       max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> tuple[Plan, dict[str, Any]]:
    """The checked plan for `request` and what its model calls used (`usage_of`'s shape).
    `InvalidRequest` for a bad request, tenant or group (before any model call)."""
    check_tenant(tenant)
    if not isinstance(request, str) or not request.strip():
        raise InvalidRequest("a plan needs a request: what the workflow should do",
                             {"field": "request"})
    if len(request) > MAX_REQUEST_CHARS:
        raise InvalidRequest(f"a plan's request is at most {MAX_REQUEST_CHARS} characters, "
                             f"not {len(request)}", {"field": "request"})
    if group is not None and (not isinstance(group, str) or not group.strip()):
        raise InvalidRequest("model must name a configured model group", {"field": "model"})
    usage = {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0,
             "models": []}

    async def ask(messages: Sequence[Message]) -> str:
        answer = await complete({
            "tenant": tenant, "task_id": None, "group": group,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": max_tokens, "temperature": 0.0, "cache_ttl_s": None})
        _count(usage, answer)
        return str(answer.get("text", ""))

    text = request.strip()
    if run_input is not None:
        text += ("\n\nThe run's input has this shape (read it with ${ input.<field> }; "
                 "values are not shown): " + input_outline(run_input))
    plan = await plan_workflow(text, agents, ask, payload_hints=payload_hints(agents),
                               limits=limits, max_attempts=max_attempts)
    return plan, usage


def _count(usage: dict[str, Any], answer: Mapping[str, Any]) -> None:
    usage["calls"] += 1
    tokens = answer.get("usage") or {}
    usage["input_tokens"] += int(tokens.get("input_tokens") or 0)
    usage["output_tokens"] += int(tokens.get("output_tokens") or 0)
    usage["cost_usd"] = round(usage["cost_usd"] + float(answer.get("cost_usd") or 0.0), 9)
    model = answer.get("model")
    if isinstance(model, str) and model not in usage["models"]:
        usage["models"].append(model)


def payload_hints(agents: Sequence[AgentSpec]) -> dict[str, str]:
    """Each agent type's payload hint as the planner shows it: an example payload as JSON
    (its field names alone when it is long), a text hint as it is."""
    hints: dict[str, str] = {}
    for agent in agents:
        hint = agent.payload_hint
        if isinstance(hint, str) and hint.strip():
            hints[agent.name] = hint[:MAX_HINT_CHARS]
        elif isinstance(hint, Mapping) and hint:
            shown = json.dumps(hint, ensure_ascii=False, separators=(", ", ": "), default=str)
            hints[agent.name] = ("for example " + shown if len(shown) <= MAX_HINT_CHARS else
                                 "an object with " + ", ".join(str(k) for k in list(hint)[:40]))
    return hints


def input_outline(value: Any) -> str:
    """The shape of a run's input as JSON: field names kept, values replaced by their kind
    ("<text>", "<number>", ...), a list by its first element and its length."""
    shown = json.dumps(_shape(value, 0), ensure_ascii=False)
    return shown if len(shown) <= MAX_OUTLINE_CHARS else shown[:MAX_OUTLINE_CHARS] + " ..."


def _shape(value: Any, depth: int) -> Any:
    if isinstance(value, bool):
        return "<true or false>"
    if isinstance(value, (int, float)):
        return "<number>"
    if isinstance(value, str):
        return "<text>"
    if value is None:
        return None
    if depth >= _OUTLINE_DEPTH:
        return "<...>"
    if isinstance(value, Mapping):
        shape = {str(key): _shape(item, depth + 1)
                 for key, item in list(value.items())[:_OUTLINE_KEYS]}
        if len(value) > _OUTLINE_KEYS:
            shape["<...>"] = f"{len(value) - _OUTLINE_KEYS} more fields"
        return shape
    if isinstance(value, (list, tuple)):
        if not value:
            return []
        return [_shape(value[0], depth + 1), f"<{len(value)} items like the first>"]
    return f"<{type(value).__name__}>"


def plan_key(document: Mapping[str, Any], run_input: Any) -> str:
    """The idempotency key of running `document` with `run_input`: the same pair, the same
    key (and so the same run)."""
    canonical = json.dumps({"document": document, "input": run_input}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False, default=str)
    return "plan:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def plan_answer(plan: Plan, usage: Mapping[str, Any], run_id: str | None) -> dict[str, Any]:
    """What `plan` answers: the document to review, it rendered, the attempts it took, the
    problems of the refused ones, the run started (or None) and the model calls' usage."""
    return {"document": plan.document, "rendered": render_plan(plan.spec),
            "attempts": plan.attempts, "problems": list(plan.problems), "run_id": run_id,
            "usage": dict(usage)}


# ----------------------------------------------------------------------- the orchestrator

class Planning:
    """`plan` of `actors.orchestrator.Orchestrator` (a mixin over its `config`, `agent_types`
    and `submit_workflow`)."""

    config: OrchestratorConfig
    agent_types: dict[str, Any]

    if TYPE_CHECKING:
        def submit_workflow(self, document: dict[str, Any] | str, input: Any = None, *,
                            idempotency_key: str | None = None, tenant: str = "default",
                            wait_s: float | None = None,
                            callback_url: str | None = None) -> Awaitable[RunDetail]: ...

    async def plan(self, tenant: str, request: str, *, run: bool = False, input: Any = None,
                   group: str | None = None) -> dict[str, Any]:
        """A workflow for `request` from the registered agent types, checked; with `run`, also
        started as a run of `tenant` with `input` (see the module docstring)."""
        settings = self.config.llm
        if settings is None:
            raise NoModelConfigured(NO_MODEL_HINT)
        if not isinstance(run, bool):
            raise InvalidRequest(f"run must be true or false, not {run!r}", {"field": "run"})
        plan, usage = await plan_request(
            request, tenant=tenant, group=group, run_input=input,
            agents=[agent.spec for agent in self.agent_types.values()],
            complete=self._gateway_complete, limits=self.config.workflow_limits,
            max_tokens=min(PLAN_MAX_TOKENS, settings.max_tokens_limit))
        run_id = None
        if run:
            detail = await self.submit_workflow(
                plan.document, input, idempotency_key=plan_key(plan.document, input),
                tenant=tenant)
            run_id = detail.run.id
        return plan_answer(plan, usage, run_id)

    async def _gateway_complete(self, request: dict[str, Any]) -> dict[str, Any]:
        """The gateway's answer to `request`, its errors as the platform's."""
        from actors.llm_gateway import find_llm_gateway  # imports Ray
        from actors.orchestrator_api import ray_errors_translated

        handle = find_llm_gateway(self.config.namespace)
        if handle is None:
            raise PlatformUnavailable("the model gateway is not running yet; try again shortly")
        with ray_errors_translated("the model gateway"):
            answer: dict[str, Any] = await handle.complete.remote(request)
        return answer
