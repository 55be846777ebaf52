"""Every Redis key and pub/sub channel name the platform uses, in one place.

All names start with `ymera:<namespace>:`, so one Redis server can hold several deployments (or
test runs) side by side, and everything a namespace owns is found with `namespace_pattern`:

    ymera:<namespace>:events:task:<task_id>          channel: one task's events
    ymera:<namespace>:events:tenant:<tenant>         channel: every event of a tenant's tasks
    ymera:<namespace>:ratelimit:<scope>:<identity>   key: one rate-limit budget (GCRA state)
    ymera:<namespace>:llm:breaker:<deployment>      key: one model deployment's circuit breaker

Namespaces and scopes are restricted to `[A-Za-z0-9_.-]`, so a name can always be split back into
its parts and a namespace's glob pattern matches nothing outside it. The last part of every name
(a task id, tenant or identity) may be any non-empty string.
"""

from __future__ import annotations

import re

from storage.errors import InvalidRequest

PREFIX = "ymera"

_SEGMENT = re.compile(r"[A-Za-z0-9_.\-]+")


def _segment(kind: str, value: str) -> str:
    if not _SEGMENT.fullmatch(value):
        raise InvalidRequest(
            f"Redis {kind} {value!r} must be letters, digits, '_', '.' or '-'",
            {kind: value},
        )
    return value


def _tail(kind: str, value: str) -> str:
    if not value:
        raise InvalidRequest(f"Redis {kind} must not be empty", {kind: value})
    return value


def namespace_prefix(namespace: str) -> str:
    """The prefix shared by every key and channel of `namespace`, ending with ':'."""
    return f"{PREFIX}:{_segment('namespace', namespace)}:"


def namespace_pattern(namespace: str) -> str:
    """A `SCAN MATCH` pattern for every key of `namespace` and nothing else."""
    return namespace_prefix(namespace) + "*"


def task_channel(namespace: str, task_id: str) -> str:
    """The pub/sub channel carrying the events of one task."""
    return f"{namespace_prefix(namespace)}events:task:{_tail('task_id', task_id)}"


def tenant_channel(namespace: str, tenant: str) -> str:
    """The pub/sub channel carrying the events of every task of one tenant."""
    return f"{namespace_prefix(namespace)}events:tenant:{_tail('tenant', tenant)}"


def rate_limit_key(namespace: str, scope: str, identity: str) -> str:
    """The key holding the rate-limit state of `identity` (an API key, a tenant) in `scope`."""
    return (
        f"{namespace_prefix(namespace)}ratelimit:{_segment('scope', scope)}:"
        f"{_tail('identity', identity)}"
    )


def llm_breaker_key(namespace: str, deployment: str) -> str:
    """The key of one model deployment's circuit-breaker record."""
    return f"{namespace_prefix(namespace)}llm:breaker:{_tail('deployment', deployment)}"
