"""Webhook subscriptions, callback secrets and the delivery outbox, per tenant.

    store = WebhookStore(engine)
    subscription, secret = await store.create_subscription("acme", url, ["task.succeeded"])
    due = await store.due_deliveries(now)            # the delivery actor's work
    await store.record_attempt(delivery.id, number=1, ..., outcome="delivered")

Guarantees:
- Every operation but the delivery actor's names its tenant; another tenant's subscription or
  delivery is `NotFound`, exactly like one that does not exist. Secrets are returned only by
  `create_subscription`, `rotate_secret` and the callback-secret calls, never in a record.
- Bad input (`check_event_kinds`, `check_webhook_url`, text lengths) is `InvalidRequest` naming
  the field, and nothing is written.
- A rotated secret keeps signing beside the new one until its overlap ends, so receivers can
  switch without losing a delivery.
- `due_deliveries` returns, of each ordering key (one receiver and one task or run), only the
  oldest pending delivery: a later event of a task waits until the earlier one was delivered or
  failed, so each receiver sees a task's events in the order they were committed.
- An attempt is recorded with the delivery's new state in one transaction (several attempts
  may share one: `record_attempts`), and only while the delivery is still pending with the
  attempt's number next: a late answer cannot overwrite a redelivery.
"""

from __future__ import annotations

import base64
import dataclasses
import secrets as random_secrets
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.database import EngineStore
from storage.errors import InvalidRequest, NotFound
from storage.example_store import check_tenant
from storage.messages import as_utc, utcnow
from storage.models import (
    webhook_attempts_table as attempts,
    webhook_callback_secrets_table as callback_secrets,
    webhook_deliveries_table as deliveries,
    webhook_subscriptions_table as subscriptions,
)
from storage.storable import check_text
from storage.webhook_records import (
    DELIVERY_STATUSES,
    MAX_SUBSCRIPTIONS_PER_TENANT,
    Delivery,
    DeliveryAttempt,
    Subscription,
    check_event_kinds,
    check_webhook_url,
)

MAX_PAGE = 1000
MAX_EXCERPT = 1000
MAX_OVERLAP_S = 30 * 24 * 3600.0
OUTCOMES = ("delivered", "retry", "failed")
_UNSET: Any = object()


def new_secret() -> str:
    """A signing secret in the Standard Webhooks form: "whsec_" and 32 random bytes, base64."""
    return "whsec_" + base64.b64encode(random_secrets.token_bytes(32)).decode()


def _aware(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def _subscription(row: Any) -> Subscription:
    return Subscription(
        id=row.id, tenant=row.tenant, url=row.url,
        events=tuple(k for k in row.events.split(",") if k), agent_type=row.agent_type,
        workflow=row.workflow, description=row.description, enabled=bool(row.enabled),
        created_at=as_utc(row.created_at), updated_at=as_utc(row.updated_at),
        created_by=row.created_by, secret_rotated_at=_aware(row.secret_rotated_at),
        previous_secret_expires_at=_aware(row.previous_secret_expires_at))


def _delivery(row: Any) -> Delivery:
    return Delivery(
        id=row.id, tenant=row.tenant, subscription_id=row.subscription_id, url=row.url,
        event_kind=row.event_kind, task_id=row.task_id, run_id=row.run_id, payload=row.payload,
        status=row.status, attempts=row.attempts, created_at=as_utc(row.created_at),
        next_attempt_at=as_utc(row.next_attempt_at), expires_at=as_utc(row.expires_at),
        delivered_at=_aware(row.delivered_at), last_status_code=row.last_status_code,
        last_error=row.last_error, seq=row.seq)


def _events_column(kinds: Any) -> str:
    return "," + ",".join(check_event_kinds(kinds)) + ","


def _check_filters(agent_type: Any, workflow: Any, description: Any) -> None:
    for field, value, limit in (("agent_type", agent_type, 64), ("workflow", workflow, 128),
                                ("description", description, 200)):
        if value is not None:
            check_text("webhook", field, value, limit)


def _check_overlap(overlap_s: Any) -> float:
    if isinstance(overlap_s, bool) or not isinstance(overlap_s, (int, float)) \
            or not 0 <= overlap_s <= MAX_OVERLAP_S:
        raise InvalidRequest(f"overlap_s must be between 0 and {int(MAX_OVERLAP_S)} seconds",
                             {"field": "overlap_s"})
    return float(overlap_s)


def _live_secrets(row: Any, now: datetime) -> list[str]:
    found = [row.secret]
    expires = _aware(row.previous_secret_expires_at)
    if row.previous_secret and expires is not None and expires > now:
        found.append(row.previous_secret)
    return found


def _encode_seq(seq: int) -> str:
    return base64.urlsafe_b64encode(f"d:{seq}".encode()).decode()


def _decode_seq(cursor: str) -> int:
    try:
        kind, value = base64.urlsafe_b64decode(cursor.encode()).decode().split(":")
        if kind != "d":
            raise ValueError(kind)
        return int(value)
    except Exception as exc:
        raise InvalidRequest(f"cursor {cursor!r} is not one this delivery list issued",
                             {"field": "cursor"}) from exc


@dataclasses.dataclass(frozen=True)
class AttemptRecord:
    """One attempt to record (`WebhookStore.record_attempts`)."""

    delivery_id: str
    number: int
    at: datetime
    status_code: int | None
    error: str | None
    response_excerpt: str | None
    duration_ms: float
    outcome: str
    next_attempt_at: datetime | None = None


class WebhookStore(EngineStore):
    """Async access to webhook subscriptions and deliveries over one engine."""

    # ------------------------------------------------------------------ subscriptions

    async def create_subscription(
        self, tenant: str, url: str, events: Any, *, agent_type: str | None = None,
        workflow: str | None = None, description: str | None = None,
        created_by: str | None = None, enabled: bool = True,
    ) -> tuple[Subscription, str]:
        """A new subscription of `tenant` and its secret (shown this once)."""
        check_tenant(tenant)
        url = check_webhook_url(url)
        kinds = _events_column(events)
        _check_filters(agent_type, workflow, description)
        now = utcnow()
        secret = new_secret()
        row = {"id": "wh_" + uuid.uuid4().hex[:24], "tenant": tenant, "url": url,
               "events": kinds, "agent_type": agent_type, "workflow": workflow,
               "description": description, "enabled": bool(enabled), "secret": secret,
               "previous_secret": None, "previous_secret_expires_at": None,
               "secret_rotated_at": None, "created_by": (created_by or None) and created_by[:128],
               "created_at": now, "updated_at": now}
        async with self._transaction("creating a webhook subscription") as connection:
            count = (await connection.execute(
                select(func.count()).select_from(subscriptions)
                .where(subscriptions.c.tenant == tenant))).scalar_one()
            if count >= MAX_SUBSCRIPTIONS_PER_TENANT:
                raise InvalidRequest(f"a tenant may have at most {MAX_SUBSCRIPTIONS_PER_TENANT} "
                                     "webhook subscriptions; delete one first",
                                     {"field": "url", "limit": MAX_SUBSCRIPTIONS_PER_TENANT})
            await connection.execute(insert(subscriptions), row)
        return _subscription(_Row(row)), secret

    async def list_subscriptions(self, tenant: str) -> list[Subscription]:
        """`tenant`'s subscriptions, oldest first."""
        rows = await self._fetch(select(subscriptions).where(subscriptions.c.tenant == tenant)
                                 .order_by(subscriptions.c.created_at, subscriptions.c.id))
        return [_subscription(row) for row in rows]

    async def get_subscription(self, tenant: str, subscription_id: str) -> Subscription:
        rows = await self._fetch(select(subscriptions).where(*self._mine(tenant, subscription_id)))
        if not rows:
            raise self._missing(subscription_id)
        return _subscription(rows[0])

    async def update_subscription(
        self, tenant: str, subscription_id: str, *, url: Any = _UNSET, events: Any = _UNSET,
        enabled: Any = _UNSET, agent_type: Any = _UNSET, workflow: Any = _UNSET,
        description: Any = _UNSET,
    ) -> Subscription:
        """Change only the fields given (None clears a filter or the description)."""
        values: dict[str, Any] = {}
        if url is not _UNSET:
            values["url"] = check_webhook_url(url)
        if events is not _UNSET:
            values["events"] = _events_column(events)
        if enabled is not _UNSET:
            if not isinstance(enabled, bool):
                raise InvalidRequest("enabled must be true or false", {"field": "enabled"})
            values["enabled"] = enabled
        _check_filters(None if agent_type is _UNSET else agent_type,
                       None if workflow is _UNSET else workflow,
                       None if description is _UNSET else description)
        for name, value in (("agent_type", agent_type), ("workflow", workflow),
                            ("description", description)):
            if value is not _UNSET:
                values[name] = value
        values["updated_at"] = utcnow()
        async with self._transaction(f"updating webhook {subscription_id!r}") as connection:
            result = await connection.execute(
                update(subscriptions).where(*self._mine(tenant, subscription_id)).values(values))
        if not result.rowcount:
            raise self._missing(subscription_id)
        return await self.get_subscription(tenant, subscription_id)

    async def delete_subscription(self, tenant: str, subscription_id: str) -> None:
        """Delete it; its pending deliveries fail ("subscription deleted"), its history stays."""
        async with self._transaction(f"deleting webhook {subscription_id!r}") as connection:
            result = await connection.execute(
                delete(subscriptions).where(*self._mine(tenant, subscription_id)))
            if result.rowcount:
                await connection.execute(
                    update(deliveries).where(deliveries.c.subscription_id == subscription_id,
                                             deliveries.c.tenant == tenant,
                                             deliveries.c.status == "pending")
                    .values(status="failed", last_error="subscription deleted"))
        if not result.rowcount:
            raise self._missing(subscription_id)

    async def rotate_secret(self, tenant: str, subscription_id: str,
                            overlap_s: float = 86400.0) -> tuple[Subscription, str]:
        """A new secret for the subscription; the old one also signs for `overlap_s` more."""
        overlap = _check_overlap(overlap_s)
        now = utcnow()
        secret = new_secret()
        async with self._transaction(f"rotating webhook {subscription_id!r}") as connection:
            rows = (await connection.execute(
                select(subscriptions.c.secret).where(*self._mine(tenant, subscription_id))
            )).all()
            if not rows:
                raise self._missing(subscription_id)
            await connection.execute(
                update(subscriptions).where(*self._mine(tenant, subscription_id)).values(
                    secret=secret, previous_secret=rows[0].secret if overlap else None,
                    previous_secret_expires_at=now + timedelta(seconds=overlap)
                    if overlap else None, secret_rotated_at=now, updated_at=now))
        return await self.get_subscription(tenant, subscription_id), secret

    async def active_tenants(self) -> set[str]:
        """The tenants with at least one enabled subscription."""
        rows = await self._fetch(select(subscriptions.c.tenant).distinct()
                                 .where(subscriptions.c.enabled.is_(True)))
        return {row.tenant for row in rows}

    # ------------------------------------------------------------------ callback secrets

    async def callback_secret(self, tenant: str) -> str:
        """The secret that signs `tenant`'s task callbacks, made on first use."""
        check_tenant(tenant)
        async with self._transaction("reading the callback secret") as connection:
            return await self._callback_row(connection, tenant)

    async def rotate_callback_secret(self, tenant: str, overlap_s: float = 86400.0) -> str:
        """A new callback secret; the old one also signs for `overlap_s` more."""
        check_tenant(tenant)
        overlap = _check_overlap(overlap_s)
        now = utcnow()
        secret = new_secret()
        async with self._transaction("rotating the callback secret") as connection:
            old = await self._callback_row(connection, tenant)
            await connection.execute(
                update(callback_secrets).where(callback_secrets.c.tenant == tenant).values(
                    secret=secret, previous_secret=old if overlap else None,
                    previous_secret_expires_at=now + timedelta(seconds=overlap)
                    if overlap else None, updated_at=now))
        return secret

    async def _callback_row(self, connection: AsyncConnection, tenant: str) -> str:
        table = callback_secrets
        row = (await connection.execute(select(table.c.secret)
                                        .where(table.c.tenant == tenant))).first()
        if row is not None:
            return str(row.secret)
        now = utcnow()
        secret = new_secret()
        try:
            async with connection.begin_nested():
                await connection.execute(insert(table), {
                    "tenant": tenant, "secret": secret, "previous_secret": None,
                    "previous_secret_expires_at": None, "created_at": now, "updated_at": now})
            return secret
        except Exception:  # another caller made it first: theirs stands
            row = (await connection.execute(select(table.c.secret)
                                            .where(table.c.tenant == tenant))).first()
            if row is None:
                raise
            return str(row.secret)

    async def signing_secrets(self, tenant: str, subscription_id: str | None) -> list[str]:
        """The secrets a delivery is signed with, the current one first and the previous one
        while its overlap lasts; `subscription_id` None means the tenant's callbacks. [] for a
        subscription that no longer exists."""
        now = utcnow()
        if subscription_id is None:
            async with self._transaction("reading the callback secret") as connection:
                await self._callback_row(connection, tenant)
                row = (await connection.execute(select(callback_secrets).where(
                    callback_secrets.c.tenant == tenant))).one()
            return _live_secrets(row, now)
        rows = await self._fetch(select(subscriptions).where(*self._mine(tenant,
                                                                          subscription_id)))
        return _live_secrets(rows[0], now) if rows else []

    # ------------------------------------------------------------------ deliveries

    async def due_deliveries(self, now: datetime, limit: int = 100) -> list[Delivery]:
        """Pending deliveries due at `now`, oldest first, each the oldest pending one of its
        ordering key."""
        earlier = deliveries.alias("earlier")
        query = (select(deliveries)
                 .where(deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now,
                        ~select(earlier.c.seq).where(
                            earlier.c.order_key == deliveries.c.order_key,
                            earlier.c.status == "pending",
                            earlier.c.seq < deliveries.c.seq).exists())
                 .order_by(deliveries.c.seq).limit(limit))
        return [_delivery(row) for row in await self._fetch(query)]

    async def record_attempt(
        self, delivery_id: str, *, number: int, at: datetime, status_code: int | None,
        error: str | None, response_excerpt: str | None, duration_ms: float, outcome: str,
        next_attempt_at: datetime | None = None,
    ) -> bool:
        """Record attempt `number` and the delivery's new state; False (nothing written) when
        the delivery is no longer pending at attempt `number - 1`."""
        return (await self.record_attempts([AttemptRecord(
            delivery_id, number, at, status_code, error, response_excerpt, duration_ms,
            outcome, next_attempt_at)]))[0]

    async def record_attempts(self, records: Sequence[AttemptRecord]) -> list[bool]:
        """`record_attempt` for several deliveries in one transaction (the delivery actor's
        group commit); for each, whether it was written."""
        for record in records:
            if record.outcome not in OUTCOMES:
                raise InvalidRequest(f"outcome must be one of {', '.join(OUTCOMES)}",
                                     {"field": "outcome"})
            if record.outcome == "retry" and record.next_attempt_at is None:
                raise InvalidRequest("a retry needs next_attempt_at",
                                     {"field": "next_attempt_at"})
        written: list[bool] = []
        rows: list[dict[str, Any]] = []
        c = deliveries.c
        async with self._transaction(f"recording {len(records)} delivery attempts") as connection:
            for record in records:
                values: dict[str, Any] = {
                    "attempts": record.number, "last_status_code": record.status_code,
                    "last_error": record.error[:2000] if record.error else None}
                if record.outcome == "delivered":
                    values.update(status="delivered", delivered_at=record.at)
                elif record.outcome == "failed":
                    values.update(status="failed")
                else:
                    values.update(next_attempt_at=record.next_attempt_at)
                row = (await connection.execute(
                    update(deliveries).where(c.id == record.delivery_id, c.status == "pending",
                                             c.attempts == record.number - 1)
                    .values(values).returning(c.seq))).first()
                written.append(row is not None)
                if row is not None:
                    rows.append({
                        "delivery_seq": row.seq, "number": record.number, "at": record.at,
                        "status_code": record.status_code,
                        "error": record.error[:2000] if record.error else None,
                        "response_excerpt": record.response_excerpt[:MAX_EXCERPT]
                        if record.response_excerpt else None,
                        "duration_ms": float(record.duration_ms)})
            if rows:
                await connection.execute(insert(attempts), rows)
        return written

    async def list_deliveries(
        self, tenant: str, *, subscription_id: str | None = None, status: str | None = None,
        task_id: str | None = None, event_kind: str | None = None, limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Delivery], str | None]:
        """`tenant`'s deliveries, newest first, filtered, and the next page's cursor."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}, not {limit}",
                                 {"field": "limit"})
        if status is not None and status not in DELIVERY_STATUSES:
            raise InvalidRequest(f"status must be one of {', '.join(DELIVERY_STATUSES)}",
                                 {"field": "status"})
        c = deliveries.c
        query = select(deliveries).where(c.tenant == tenant)
        for column, value in ((c.subscription_id, subscription_id), (c.status, status),
                              (c.task_id, task_id), (c.event_kind, event_kind)):
            if value is not None:
                query = query.where(column == value)
        if cursor:
            query = query.where(c.seq < _decode_seq(cursor))
        rows = await self._fetch(query.order_by(c.seq.desc()).limit(limit + 1))
        found = [_delivery(row) for row in rows[:limit]]
        return found, _encode_seq(found[-1].seq) if len(rows) > limit else None

    async def get_delivery(self, tenant: str, delivery_id: str
                           ) -> tuple[Delivery, list[DeliveryAttempt]]:
        """`tenant`'s delivery and its attempts, first to last."""
        rows = await self._fetch(select(deliveries).where(deliveries.c.id == delivery_id,
                                                          deliveries.c.tenant == tenant))
        if not rows:
            raise NotFound(f"no webhook delivery with id {delivery_id!r}",
                           {"delivery_id": delivery_id})
        found = _delivery(rows[0])
        tries = await self._fetch(select(attempts).where(attempts.c.delivery_seq == found.seq)
                                  .order_by(attempts.c.number))
        return found, [DeliveryAttempt(found.id, row.number, as_utc(row.at), row.status_code,
                                       row.error, row.response_excerpt, row.duration_ms)
                       for row in tries]

    async def redeliver(self, tenant: str, delivery_id: str,
                        retry_period_s: float = 86400.0) -> Delivery:
        """Send a delivered or failed delivery again (same `webhook-id`), from now on, for up
        to `retry_period_s`; a pending one is left as it is."""
        now = utcnow()
        async with self._transaction(f"redelivering {delivery_id!r}") as connection:
            await connection.execute(
                update(deliveries).where(deliveries.c.id == delivery_id,
                                         deliveries.c.tenant == tenant,
                                         deliveries.c.status != "pending")
                .values(status="pending", next_attempt_at=now, delivered_at=None,
                        expires_at=now + timedelta(seconds=retry_period_s)))
        return (await self.get_delivery(tenant, delivery_id))[0]

    async def delivery_gauges(self, now: datetime) -> dict[str, Any]:
        """Pending deliveries, the age of the oldest, and failures in the last day."""
        c = deliveries.c
        pending, failed = await self._fetch_all(
            select(func.count(), func.min(c.created_at)).where(c.status == "pending"),
            select(func.count()).where(c.status == "failed",
                                       c.created_at >= now - timedelta(days=1)))
        oldest = pending[0][1]
        return {"pending": int(pending[0][0]), "failed_24h": int(failed[0][0]),
                "oldest_pending_age_s": (now - as_utc(oldest)).total_seconds()
                if oldest is not None else 0.0}

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _mine(tenant: str, subscription_id: str) -> tuple[Any, Any]:
        return (subscriptions.c.id == subscription_id, subscriptions.c.tenant == tenant)

    @staticmethod
    def _missing(subscription_id: str) -> NotFound:
        return NotFound(f"no webhook subscription with id {subscription_id!r}",
                        {"subscription_id": subscription_id})


class _Row:
    """A dict read like a result row (for a record made from the row just inserted)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


__all__ = ["WebhookStore", "new_secret"]
