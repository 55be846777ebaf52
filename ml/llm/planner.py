"""The planner: a natural-language request turned into a workflow document, checked before use.

`plan_workflow` shows a language model the workflow document format (see `storage.workflow_spec`)
and the registered agent types (name, description, capabilities, a few examples, and a payload
hint when one is given), asks for the document as JSON alone, and checks the answer with
`compile_spec` against exactly those agent types and the platform's limits. Guarantees:

- The prompt names the registered agent types and no others; a plan naming any other, leaving a
  task step to the router (`description` instead of `agent_type`), forming a cycle, reading a step
  it does not depend on, or exceeding a limit is refused, and the model is asked again with the
  reason, at most `max_attempts` times in all. The retry carries the previous answer and its
  problem, nothing older, so a conversation never grows past four messages.
- An answer is JSON or nothing: one ```json fence around it is tolerated, any other text is a
  problem fed back like the others.
- The result is a `Plan` (the document as the model wrote it, its compiled spec, the attempts and
  the problems met on the way); when every attempt fails, `PlanRefused` lists each attempt's
  problem. Nothing is ever executed or stored here: a person (or an explicit flag) decides.
- The model is only called through `complete(messages) -> str`; its errors (`ml.llm.types`)
  pass through unchanged.

`render_plan` writes a document (or spec) as text for a person to review: the steps in dependency
order with their agent, what they wait for, and where each payload value comes from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ml.llm.types import Message
from storage.errors import InvalidRequest, YmeraError
from storage.messages import AgentSpec
from storage.workflow_refs import expression_roots, reference_expression, template_expressions
from storage.workflow_spec import (
    StepSpec, WorkflowLimits, WorkflowSpec, compile_spec, spec_from_json)

CompleteText = Callable[[Sequence[Message]], Awaitable[str]]
"""A model call: the conversation in, the answer's text out."""

DEFAULT_MAX_ATTEMPTS = 3
MAX_CAPABILITIES_SHOWN = 12
MAX_EXAMPLES_SHOWN = 4
MAX_ECHOED_ANSWER_CHARS = 20_000
"""How much of a refused answer is shown back to the model with its problem."""

_FENCE = re.compile(r"\A```(?:json|JSON)?[ \t]*\n(?P<body>.*)\n[ \t]*```\Z", re.DOTALL)

_EXAMPLE = {
    "name": "per_item_then_total", "version": "1", "failure_policy": "fail_fast",
    "steps": [
        {"id": "each", "agent_type": "<an agent below>",
         "map_over": {"over": "input.items", "max_width": 100, "parallelism": 8},
         "payload": {"<its field>": "${ item.text }", "<another field>": "a literal"}},
        {"id": "combine", "agent_type": "<an agent below>", "depends_on": ["each"],
         "payload": {"<its field>": "${ steps.each.output[*].score }"}},
    ],
}
"""The format's example: placeholders, so it never names an agent type that is not registered."""


class PlanRefused(YmeraError):
    """No attempt gave a valid plan; `details["attempts"]` holds each attempt's problem."""

    code = "plan_refused"


@dataclass(frozen=True)
class Plan:
    """A checked plan: the `document` as written (what a person reviews and edits), its compiled
    `spec`, how many model calls it took, and the problems of the refused attempts before it."""

    document: dict[str, Any]
    spec: WorkflowSpec
    attempts: int
    problems: tuple[str, ...] = ()


async def plan_workflow(
    request: str, agents: Sequence[AgentSpec], complete: CompleteText, *,
    payload_hints: Mapping[str, str | Mapping[str, Any]] | None = None,
    limits: WorkflowLimits | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> Plan:
    """The workflow `request` asks for, using only `agents`; see the module docstring.

    `payload_hints` maps an agent type to what its payload looks like: a text, or a JSON Schema.
    Raises `InvalidRequest` for an empty request, no agents or a bad `max_attempts` (before any
    model call), and `PlanRefused` when every attempt was refused."""
    if not isinstance(request, str) or not request.strip():
        raise InvalidRequest("a plan needs a request: what the workflow should do",
                             {"field": "request"})
    if not agents:
        raise InvalidRequest("no agent types are registered, so nothing can be planned",
                             {"field": "agents"})
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise InvalidRequest(f"max_attempts must be a whole number of at least 1, got "
                             f"{max_attempts!r}", {"field": "max_attempts"})
    limits = limits or WorkflowLimits()
    names = [agent.name for agent in agents]
    if len(set(names)) != len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise InvalidRequest(f"agent types listed twice: {', '.join(twice)}", {"field": "agents"})
    opening = [Message("system", planner_prompt(agents, payload_hints or {}, limits)),
               Message("user", request.strip())]
    messages = list(opening)
    problems: list[str] = []
    for attempt in range(1, max_attempts + 1):
        answer = await complete(messages)
        try:
            document = parse_answer(answer)
            spec = _checked(document, names, limits)
        except InvalidRequest as exc:
            problems.append(exc.message)
            messages = [*opening, Message("assistant", _clip(answer)),
                        Message("user", _feedback(exc.message))]
            continue
        return Plan(document, spec, attempt, tuple(problems))
    listed = "; ".join(f"attempt {n}: {problem}" for n, problem in enumerate(problems, 1))
    raise PlanRefused(f"no valid plan after {max_attempts} attempt(s): {listed}",
                      {"attempts": [{"attempt": n, "problem": problem}
                                    for n, problem in enumerate(problems, 1)]})


def planner_prompt(agents: Sequence[AgentSpec], payload_hints: Mapping[str, Any],
                   limits: WorkflowLimits) -> str:
    """The system prompt: the document format, one example, the limits and the agents."""
    catalogue = "\n".join(_agent_entry(agent, payload_hints.get(agent.name)) for agent in agents)
    return f"""You plan workflows. Turn the user's request into ONE workflow document and answer \
with that JSON object alone: no prose, no comments.

Document: {{"name": ..., "version": "1", "failure_policy": "fail_fast", "steps": [...]}}
- name and step ids: a letter or digit, then letters, digits or _.:- (at most 64).
- each step: "id" (unique), "agent_type" (one of the agents below, no other name), "payload" \
(a JSON object for that agent), "depends_on" (ids of the steps that must finish first).
- a payload string "${{ expression }}" is replaced by the value of a JMESPath expression over \
{{"input": the run's input, "steps": {{"<id>": {{"output": ...}}}}}}; anything else is literal. \
A step may read steps.<id> only when it depends on <id>, directly or through other steps. \
No cycles.
- data quoted in the request goes into payloads as literals; data the user will supply later \
is read from "input" (say "${{ input.rows }}").
- optional per step: "condition" (JMESPath; when false the step is skipped), "map_over" \
({{"over": "<expression of a list>", "max_width": N, "parallelism": P}}: one task per \
element, whose payload reads "item"), "approval" ({{"timeout_s": S, "on_timeout": "reject"}}: \
a person decides before it runs), "timeout_s", "max_attempts".
- limits: at most {limits.max_steps} steps, max_width {limits.max_fan_out}, parallelism \
{limits.max_parallelism}, timeout_s {limits.max_step_timeout_s:g}, max_attempts \
{limits.max_attempts}.

Example (replace each <...>):
{json.dumps(_EXAMPLE, separators=(", ", ": "))}

Agents:
{catalogue}"""


def _agent_entry(agent: AgentSpec, hint: Any) -> str:
    lines = [f"- {agent.name}: {agent.description}"]
    if agent.capabilities:
        lines.append("  can: " + "; ".join(agent.capabilities[:MAX_CAPABILITIES_SHOWN]))
    if agent.examples:
        lines.append("  asked like: " + " | ".join(agent.examples[:MAX_EXAMPLES_SHOWN]))
    if isinstance(hint, str) and hint.strip():
        lines.append("  payload: " + " ".join(hint.split()))
    elif isinstance(hint, Mapping):
        lines.append("  payload JSON Schema: " + json.dumps(hint, separators=(",", ":")))
    return "\n".join(lines)


def parse_answer(answer: str) -> dict[str, Any]:
    """The JSON object of a model's answer (optionally in one ```json fence), or
    `InvalidRequest` saying what is wrong with it."""
    text = answer.strip() if isinstance(answer, str) else ""
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group("body").strip()
    if not text.startswith("{") or not text.endswith("}"):
        raise InvalidRequest("the answer must be the JSON workflow document alone, starting "
                             "with { and ending with }, without other text",
                             {"field": "document"})
    try:
        document = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"the answer is not valid JSON: {exc.msg} at line {exc.lineno} "
                             f"column {exc.colno}", {"field": "document"}) from exc
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"the answer is not plain JSON: {exc or 'nested too deeply'}",
                             {"field": "document"}) from exc
    if not isinstance(document, dict):
        raise InvalidRequest("the answer must be a JSON object", {"field": "document"})
    return document


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _checked(document: dict[str, Any], agent_types: Sequence[str],
             limits: WorkflowLimits) -> WorkflowSpec:
    spec = compile_spec(document, agent_types, limits)
    routed = next((step for step in spec.steps if step.description is not None), None)
    if routed is not None:
        raise InvalidRequest(f"step {routed.id!r} description: name its agent_type (one of "
                             f"{', '.join(sorted(agent_types))}) instead of a description",
                             {"step": routed.id, "field": "description"})
    for step in spec.steps:
        embedded = _embedded_reference(step.payload, "payload")
        if embedded is not None:
            where, text = embedded
            raise InvalidRequest(
                f"step {step.id!r} {where}: {text!r} mixes text with a ${{ ... }} reference; a "
                "reference must be the whole value (\"${ input.x }\"), it is never filled into "
                "a longer string", {"step": step.id, "field": where})
    return spec


def _embedded_reference(template: Any, where: str) -> tuple[str, str] | None:
    """The first string of `template` that holds `${` without being one whole reference
    (the engine would pass it on literally), with where it is."""
    if isinstance(template, dict):
        items: list[tuple[str, Any]] = [(f"{where}.{key}", value) for key, value in template.items()]
    elif isinstance(template, list):
        items = [(f"{where}[{index}]", value) for index, value in enumerate(template)]
    elif isinstance(template, str) and "${" in template and reference_expression(template) is None:
        return where, template
    else:
        return None
    for place, value in items:
        found = _embedded_reference(value, place)
        if found is not None:
            return found
    return None


def _feedback(problem: str) -> str:
    return (f"That document was refused: {problem}\nAnswer again with the whole corrected "
            "workflow document, as JSON alone.")


def _clip(answer: str) -> str:
    if len(answer) <= MAX_ECHOED_ANSWER_CHARS:
        return answer
    return answer[:MAX_ECHOED_ANSWER_CHARS] + "\n[... cut]"


# ------------------------------------------------------------------------------------ review

def render_plan(document: Mapping[str, Any] | WorkflowSpec) -> str:
    """The plan as text for a person: one numbered entry per step, dependencies first
    (compensations last), with its agent, what it waits for, and its payload values, each
    `← expression` where it is read from the input or another step. Raises `InvalidRequest`
    for a document whose shape or graph is wrong."""
    spec = document if isinstance(document, WorkflowSpec) else spec_from_json(dict(document))
    compensations = [step.id for step in spec.steps if step.id in spec.compensation_ids]
    count = len(spec.steps)
    lines = [f"workflow {spec.name} (version {spec.version}, {spec.failure_policy}): "
             f"{count} step{'s' if count != 1 else ''}"]
    for number, step_id in enumerate(spec.order(), 1):
        lines.extend(_step_lines(f"{number}.", spec.step(step_id)))
    if compensations:
        lines.append("only if the run fails (latest completed step first):")
        undone = {step.compensate: step.id for step in spec.steps if step.compensate}
        for step_id in compensations:
            lines.extend(_step_lines("-", spec.step(step_id), f"undoes {undone[step_id]}"))
    inputs = sorted({e for step in spec.steps for e in _expressions(step)
                     if expression_roots(e).input})
    if inputs:
        lines.append("reads from the run input: " + ", ".join(inputs))
    return "\n".join(lines)


def _step_lines(marker: str, step: StepSpec, note: str | None = None) -> list[str]:
    doer = step.agent_type or (f"routed: {step.description!r}" if step.description else None)
    kind = doer or ("approval" if step.approval else "timer")
    head = f"{marker} {step.id} [{kind}]"
    extras = [f"after {', '.join(step.depends_on)}"] if step.depends_on else []
    if note:
        extras.append(note)
    if step.approval:
        extras.append(f"waits for a person's approval (up to {step.approval.timeout_s:g} s, "
                      f"then {step.approval.on_timeout})")
    if step.timer:
        extras.append(f"waits {step.timer.wait_s:g} s" if step.timer.wait_s is not None
                      else f"waits until {step.timer.until}")
    if step.condition:
        extras.append(f"only if {step.condition}")
    if step.map_over:
        extras.append(f"once per element of {step.map_over.over} (at most "
                      f"{step.map_over.max_width}, {step.map_over.parallelism} at a time)")
    if step.compensate:
        extras.append(f"undone by {step.compensate} if the run fails")
    lines = [head + (": " + "; ".join(extras) if extras else "")]
    lines.extend(f"     {key}: {_shown(value)}" for key, value in step.payload.items())
    return lines


def _shown(value: Any) -> str:
    expression = reference_expression(value)
    if expression is not None:
        return f"← {expression}"
    if template_expressions(value):
        return json.dumps(_arrows(value), ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False)


def _arrows(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _arrows(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_arrows(item) for item in value]
    expression = reference_expression(value)
    return value if expression is None else f"← {expression}"


def _expressions(step: StepSpec) -> list[str]:
    found = template_expressions(step.payload)
    if step.condition:
        found.append(step.condition)
    if step.map_over:
        found.append(step.map_over.over)
    return found
