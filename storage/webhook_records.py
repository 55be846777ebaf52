"""What events going out are made of: the event kinds a subscription may name, the checks on a
receiver's URL, and the records the webhook store returns (never carrying a secret).

    check_event_kinds(["task.succeeded", "run.*"])  -> ("task.succeeded", "run.succeeded", ...)
    check_webhook_url("https://hooks.example.com/ymera")

Guarantees: a kind not in `EVENT_KINDS` (or a pattern matching none) is `InvalidRequest` naming
it and listing the kinds there are; a URL is refused unless it is http(s) with a host, no
credentials and at most `MAX_URL_LENGTH` characters. These are syntax checks only: where the host
resolves is checked by the SSRF guard (`actors.agents.webhook_addresses`) when a subscription is
made and again at every delivery.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from storage.errors import InvalidRequest

TASK_EVENT_KINDS = ("task.succeeded", "task.failed", "task.dead", "task.cancelled")
RUN_EVENT_KINDS = ("run.succeeded", "run.failed", "run.cancelled")
APPROVAL_EVENT_KINDS = ("step.awaiting_approval",)
EVENT_KINDS = TASK_EVENT_KINDS + RUN_EVENT_KINDS + APPROVAL_EVENT_KINDS
DELIVERY_STATUSES = ("pending", "delivered", "failed")
MAX_URL_LENGTH = 2048
MAX_SUBSCRIPTIONS_PER_TENANT = 100


def task_event_kind(status: str) -> str:
    """The event kind of a task reaching `status` (succeeded, failed, dead, cancelled)."""
    return f"task.{status}"


def check_event_kinds(kinds: Any) -> tuple[str, ...]:
    """The kinds a subscription asks for, in `EVENT_KINDS` order, patterns expanded ("*",
    "task.*"); `InvalidRequest` for an empty list or a kind that matches nothing."""
    if isinstance(kinds, str):
        kinds = [part.strip() for part in kinds.split(",") if part.strip()]
    if not isinstance(kinds, (list, tuple)) or not kinds:
        raise InvalidRequest("events must be a non-empty list of event kinds, for example "
                             f"[\"task.succeeded\"]; the kinds are {', '.join(EVENT_KINDS)}",
                             {"field": "events"})
    wanted: set[str] = set()
    for kind in kinds:
        matched = [k for k in EVENT_KINDS if isinstance(kind, str) and fnmatch.fnmatchcase(k, kind)]
        if not matched:
            raise InvalidRequest(f"unknown event kind {kind!r}; the kinds are "
                                 f"{', '.join(EVENT_KINDS)} (or a pattern such as 'task.*')",
                                 {"field": "events", "kind": str(kind)[:100]})
        wanted.update(matched)
    return tuple(k for k in EVENT_KINDS if k in wanted)


def check_webhook_url(url: Any, field: str = "url") -> str:
    """`url`, stripped, if it is an http(s) URL with a host and no credentials; else
    `InvalidRequest` naming `field`."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequest(f"{field} must be an http(s) URL", {"field": field})
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise InvalidRequest(f"{field} is {len(url)} characters; at most {MAX_URL_LENGTH}",
                             {"field": field})
    if any(c in url for c in "\r\n\t\0 "):
        raise InvalidRequest(f"{field} must not contain spaces or control characters",
                             {"field": field})
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise InvalidRequest(f"{field} is not a valid URL: {exc}", {"field": field}) from exc
    if parts.scheme not in ("http", "https"):
        raise InvalidRequest(f"{field} must start with https:// or http://, not "
                             f"{parts.scheme + '://' if parts.scheme else 'nothing'}",
                             {"field": field})
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest(f"{field} must not carry credentials (user:password@)",
                             {"field": field})
    if not parts.hostname:
        raise InvalidRequest(f"{field} has no host", {"field": field})
    return url


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclasses.dataclass(frozen=True)
class Subscription:
    """A tenant's webhook subscription. Its secret is shown once, when made or rotated."""

    id: str
    tenant: str
    url: str
    events: tuple[str, ...]
    agent_type: str | None
    workflow: str | None
    description: str | None
    enabled: bool
    created_at: datetime
    updated_at: datetime
    created_by: str | None = None
    secret_rotated_at: datetime | None = None
    previous_secret_expires_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["events"] = list(self.events)
        for name in ("created_at", "updated_at", "secret_rotated_at",
                     "previous_secret_expires_at"):
            data[name] = _iso(getattr(self, name))
        return data


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One event for one receiver: `id` is the `webhook-id` header (the same on every attempt
    and redelivery), `subscription_id` None for a task's callback."""

    id: str
    tenant: str
    subscription_id: str | None
    url: str
    event_kind: str
    task_id: str | None
    run_id: str | None
    payload: Any
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    expires_at: datetime
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    seq: int

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for name in ("created_at", "next_attempt_at", "expires_at", "delivered_at"):
            data[name] = _iso(getattr(self, name))
        return data


@dataclasses.dataclass(frozen=True)
class DeliveryAttempt:
    """One try at sending a delivery and what the receiver said."""

    delivery_id: str
    number: int
    at: datetime
    status_code: int | None
    error: str | None
    response_excerpt: str | None
    duration_ms: float

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["at"] = self.at.isoformat()
        return data
