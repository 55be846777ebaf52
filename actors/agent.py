"""The agent contract: what an agent type declares, and the one method it implements.

An agent is a plain Python class. The platform hosts it in Ray actors (replicas, see `replica.py`),
so an agent never touches Ray itself. A subclass sets `spec` and implements `async run(task)`:

- return any JSON-serialisable value: that is the task's result;
- raise `InvalidTaskInput` when the task is wrong for this agent (fails at once, never retried);
- raise `RetryableAgentError` for transient trouble (retried with backoff);
- anything else raised is recorded and retried, like a crash.

The task's payload is always a JSON object within the configured size limit: the orchestrator
checks it at submission and the replica again before `run`.

`run` shares its replica's event loop with the replica's other attempts and health checks:
CPU-heavy or blocking work belongs in `await asyncio.to_thread(...)`. A replica whose loop
stays blocked fails its health check and is replaced (its attempts are retried).

`setup()` runs once per replica before it takes work (load models, open clients). An exception
there costs the replica, not a task: the orchestrator replaces it.

An agent that reports on the platform itself (the `monitoring` agent) asks `self.cluster`, a
`ClusterFacts` port its replica sets (on Ray, answered by the orchestrator actor and Ray's node
table, see `actors.cluster_facts`; in tests, a fake): agents never import Ray or the
orchestrator. Agent authors import all of this from `actors.sdk`.

Two more ports work the same way: `self.llm` (`LanguageModels`), the platform's model gateway
(set on Ray by `actors.llm_port`; None where no port is given), and `self.events`
(`TaskOutput`), which adds output events (streamed text) to the running task's event log.

A type that declares `AgentSpec(on_message="task")` starts a task of its own type from every
message posted to its inbox (`actors.message_pump`); the classmethod `message_task(message)`
says which task, or None to leave the message for a reader. It runs in the orchestrator's
process, never in a replica, so it must be quick and use nothing `setup()` prepares.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Protocol

from actors.errors import InvalidTaskInput
from storage.messages import AgentContext, AgentSpec, AgentTask, InboxMessage

MAX_PAYLOAD_BYTES = 1_000_000


class ClusterFacts(Protocol):
    """What an agent may learn about the platform under it. Every method raises
    `RetryableAgentError` when the platform cannot answer now."""

    async def status(self) -> dict[str, Any]:
        """The orchestrator's `status()`: pools, queues, counts (platform-wide: an agent
        answering a tenant keeps only what every tenant shares)."""
        ...

    async def agent_stats(self, window_s: float, tenant: str) -> dict[str, dict[str, Any]]:
        """`tenant`'s outcomes and durations per agent type over the last `window_s`."""
        ...

    async def task_counts(self, tenant: str) -> dict[str, int]:
        """`tenant`'s tasks per status."""
        ...

    async def nodes(self) -> list[dict[str, Any]]:
        """The cluster's nodes as Ray describes them (`ray.nodes()`)."""
        ...


class LanguageModels(Protocol):
    """The platform's model gateway as an agent sees it. Requests and answers are the
    gateway's dicts (`actors.llm_gateway`): a request names its tenant, task, model group,
    messages and limits; an answer carries the text, model, deployment, usage and cost.

    Errors arrive as the platform's own: the `ml.llm.types.LlmError` family (`BudgetExceeded`,
    `BadModelRequest`, `NoDeploymentAnswered`, ...) and `InvalidRequest` for a request the
    gateway refuses; a gateway that cannot be reached now is `RetryableAgentError`."""

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        """One answer."""
        ...

    def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The answer as it is written: `{"delta": text}` items, then exactly one final
        `{"done": answer}` or `{"error": {"code", "message", "deployment"}}`. A failure before
        the first delta raises, as `complete` does."""
        ...


class TaskOutput(Protocol):
    """Output a running attempt adds to its task's event log, for live readers (the task's
    event stream). Events of an attempt that is no longer the task's current one are dropped."""

    async def emit(self, task: AgentTask, kind: str, data: dict[str, Any]) -> None:
        """Append one event: `kind` "output_delta" (`{"text", "index"}`) or "output_error"
        (`{"code", "message"}`)."""
        ...


class Agent:
    spec: ClassVar[AgentSpec]
    context: AgentContext | None = None  # set by the hosting replica before `setup()`
    cluster: ClusterFacts | None = None  # set by the hosting replica before `setup()`
    llm: LanguageModels | None = None  # set by the hosting replica before `setup()`
    events: TaskOutput | None = None  # set by the hosting replica before `setup()`

    async def setup(self) -> None:
        """Prepare this replica. Runs once, before the first task."""

    async def run(self, task: AgentTask) -> Any:
        raise NotImplementedError

    async def health(self) -> None:
        """Raise if this replica can no longer take work. Must answer quickly."""

    @classmethod
    def message_task(cls, message: InboxMessage) -> dict[str, Any] | None:
        """The task a message to this type's inbox starts (when the spec declares
        `on_message="task"`): `{"description", "payload"}`, optionally with "priority",
        "timeout_s" and "max_attempts"; or None to leave the message in the inbox for a
        reader. Raise `InvalidTaskInput` (`invalid(...)`) for a message that can start no
        task: it is acknowledged and its sender is told why.

        The default reads an object body. An envelope `{"payload": {...}, "description"?}`
        gives the task's payload and description; any other object is the payload itself.
        The description falls back to the message's subject, then to "message from
        <sender>". A body that is not an object is left for a reader."""
        body = message.body
        if not isinstance(body, dict):
            return None
        fallback = message.subject or f"message from {message.sender or 'an unnamed sender'}"
        if "payload" in body:
            return {"description": body.get("description") or fallback,
                    "payload": body["payload"]}
        return {"description": fallback, "payload": body}


def invalid(message: str, **details: Any) -> InvalidTaskInput:
    """The error for a task that is wrong for this agent, with its details as keywords:
    `raise invalid("payload 'rows' must be a list", field="rows")`."""
    return InvalidTaskInput(message, details)


def json_type(value: Any) -> str:
    """The JSON kind of `value`, with its article, for error messages: "a list", "null"."""
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def payload_size(payload: Any) -> int:
    return len(json.dumps(payload, separators=(",", ":"), default=str))


def require_payload_within(payload: Any, limit: int = MAX_PAYLOAD_BYTES) -> None:
    size = payload_size(payload)
    if size > limit:
        raise InvalidTaskInput(
            f"payload is {size} bytes; this agent accepts at most {limit}",
            {"size": size, "limit": limit},
        )
