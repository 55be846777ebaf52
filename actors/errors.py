"""Errors of the actors layer: what agents raise, and what the orchestrator answers with.

    YmeraError (storage.errors)
    ├── AgentError
    │   ├── RetryableAgentError   transient trouble (a dependency timed out): the task is retried
    │   └── InvalidTaskInput      the task is malformed for this agent: it fails at once, not retried
    ├── QueueFull                 the queue, or a tenant's quota of it, is full: retry later
    ├── PlatformUnavailable       no orchestrator answers at the configured Ray address
    ├── ReplicaLost               (internal) a replica died under a call
    │   └── CallFailed            (internal) the actor is alive but its method raised
    ├── CallTimedOut              (internal) a call to a replica outlived its deadline
    └── CallCancelled             (internal) a call was cancelled

An agent that raises anything else (a bug, a crash) costs the attempt and is retried, because the
platform cannot tell a bug from a transient failure; the error's type and message are recorded.
"""

from __future__ import annotations

from storage.errors import RetryAfter, YmeraError


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
