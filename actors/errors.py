"""Errors of the actors layer: what agents raise, and what the orchestrator answers with.

    YmeraError (storage.errors)
    ├── AgentError
    │   ├── RetryableAgentError   transient trouble (a dependency timed out): the task is retried
    │   └── InvalidTaskInput      the task is malformed for this agent: it fails at once, not retried
    ├── QueueFull                 the queue, or a tenant's quota of it, is full: retry later
    ├── PlatformUnavailable       the platform cannot serve the call now (no orchestrator
    │                             answers, it is starting or draining, storage is out): retry
    ├── ReplicaLost               (internal) a replica died under a call
    │   └── CallFailed            (internal) the actor is alive but its method raised
    ├── CallTimedOut              (internal) a call to a replica outlived its deadline
    └── CallCancelled             (internal) a call was cancelled

An agent that raises anything else (a bug, a crash) costs the attempt and is retried, because the
platform cannot tell a bug from a transient failure; the error's type and message are recorded.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from storage.errors import RetryAfter, SchemaOutOfDate, StorageError, YmeraError

P = ParamSpec("P")
R = TypeVar("R")


class AgentError(YmeraError):
    code = "agent_error"
    retryable = True


class RetryableAgentError(AgentError):
    code = "retryable_agent_error"
    retryable = True


class InvalidTaskInput(AgentError):
    code = "invalid_task_input"
    retryable = False


class QueueFull(RetryAfter, YmeraError):
    code = "queue_full"


class PlatformUnavailable(YmeraError):
    code = "platform_unavailable"


class ReplicaLost(YmeraError):
    """A replica died or became unreachable under a call: the attempt is lost, not the task."""

    code = "replica_lost"


class CallFailed(ReplicaLost):
    """An actor's method raised (the actor itself lives on); the message names the cause."""

    code = "call_failed"


class CallTimedOut(YmeraError):
    code = "timeout"


class CallCancelled(YmeraError):
    code = "cancelled"


def storage_trouble(exc: BaseException) -> bool:
    """Whether `exc` is the database failing or unreachable: a `StorageError` (not an
    out-of-date schema, which waits for an operator), or a driver's or socket's error that
    escaped the store."""
    if isinstance(exc, SchemaOutOfDate):
        return False
    if isinstance(exc, (StorageError, OSError)):
        return True
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, SQLAlchemyError)


def storage_trouble_unavailable(
        operation: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Decorate a public operation of the orchestrator: storage trouble under it reaches the
    caller as `PlatformUnavailable` (retryable: HTTP 503 with `Retry-After`), the cause kept
    as `__cause__`; every other error passes unchanged."""

    @functools.wraps(operation)
    async def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await operation(*args, **kwargs)
        except Exception as exc:
            if not storage_trouble(exc):
                raise
            raise PlatformUnavailable(
                f"storage is unavailable ({type(exc).__name__}: {exc}); try again shortly",
                {"cause": type(exc).__name__}) from exc

    return translated
