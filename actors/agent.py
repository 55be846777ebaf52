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
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from actors.errors import InvalidTaskInput
from storage.messages import AgentContext, AgentSpec, AgentTask

MAX_PAYLOAD_BYTES = 1_000_000


class Agent:
    spec: ClassVar[AgentSpec]
    context: AgentContext | None = None  # set by the hosting replica before `setup()`

    async def setup(self) -> None:
        """Prepare this replica. Runs once, before the first task."""

    async def run(self, task: AgentTask) -> Any:
        raise NotImplementedError

    async def health(self) -> None:
        """Raise if this replica can no longer take work. Must answer quickly."""


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
