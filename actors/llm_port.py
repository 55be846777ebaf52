"""The `LanguageModels` and `TaskOutput` ports on Ray: what an agent's replica gives it so that
the agent reaches the model gateway and its task's event log without importing Ray.

- `RayLanguageModels` calls the namespace's gateway actor (`actors.llm_gateway`, found by name
  on first use and again after it was lost). The gateway's own errors (`LlmError`s,
  `InvalidRequest`) reach the agent as themselves, unwrapped from Ray's task error. A gateway
  that is not running (the platform has no model configured, or Ray is restarting it) or that
  died under the call is `RetryableAgentError`: the `llm` type is registered only when a gateway
  was started, and Ray restarts it, so another attempt later finds it.
- `RayTaskOutput` calls the orchestrator's `task_output`, which records the event only for the
  attempt that is the task's current one. Any failure to reach the orchestrator is
  `RetryableAgentError` (agents treat output as best effort).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError

from actors.cluster_facts import ORCHESTRATOR_NAME
from actors.errors import RetryableAgentError
from storage.errors import YmeraError
from storage.messages import AgentTask


class RayLanguageModels:
    """The model gateway of Ray namespace `namespace`."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._gateway: Any = None

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        gateway = self._handle()
        with _translated(self, "the model gateway", "_gateway"):
            answer: dict[str, Any] = await gateway.complete.remote(request)
        return answer

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        gateway = self._handle()
        with _translated(self, "the model gateway", "_gateway"):
            items = gateway.stream.options(num_returns="streaming").remote(request)
            async for ref in items:
                yield await ref

    def _handle(self) -> Any:
        if self._gateway is None:
            from actors.llm_gateway import find_llm_gateway

            self._gateway = find_llm_gateway(self.namespace)
            if self._gateway is None:
                raise RetryableAgentError(
                    f"the model gateway is not running in Ray namespace {self.namespace!r} "
                    "(it may be restarting)")
        return self._gateway


class RayTaskOutput:
    """Task output events through the orchestrator of Ray namespace `namespace`."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._orchestrator: Any = None

    async def emit(self, task: AgentTask, kind: str, data: dict[str, Any]) -> None:
        if self._orchestrator is None:
            try:
                self._orchestrator = ray.get_actor(ORCHESTRATOR_NAME, namespace=self.namespace)
            except ValueError as exc:
                raise RetryableAgentError(
                    f"no orchestrator is running in Ray namespace {self.namespace!r}") from exc
        with _translated(self, "the orchestrator", "_orchestrator"):
            await self._orchestrator.task_output.remote(task.task_id, task.attempt, kind, data)


@contextlib.contextmanager
def _translated(owner: Any, what: str, handle_attribute: str) -> Iterator[None]:
    """Ray's errors of a call to `what` as the platform's (see the module); a lost actor's
    handle is forgotten so that the next call finds it again."""
    try:
        yield
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, YmeraError):
            raise cause from None
        raise RetryableAgentError(
            f"{what} failed: {type(cause or exc).__name__}: {cause or exc}") from exc
    except RayError as exc:  # the actor died or is unreachable (RayActorError and kin)
        setattr(owner, handle_attribute, None)
        raise RetryableAgentError(
            f"{what} is not answering ({type(exc).__name__}); try again shortly") from exc
