"""SQLAlchemy models of events going out: each tenant's webhook subscriptions, its signing secret
for task callbacks, the outbox of deliveries and every attempt at one. Part of `storage.models`
(which imports this module and re-exports its names); kept apart only for size.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Boolean, Float, Index, Integer, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column

from storage.model_base import Base, EventId, JsonColumn, Timestamp

WEBHOOK_SUBSCRIPTIONS = "webhook_subscriptions"
WEBHOOK_CALLBACK_SECRETS = "webhook_callback_secrets"
WEBHOOK_DELIVERIES = "webhook_deliveries"
WEBHOOK_ATTEMPTS = "webhook_attempts"


class WebhookSubscriptionRow(Base):
    """A tenant's URL and the event kinds it wants. `events` is the kinds between commas
    (",task.succeeded,task.failed,"), so one LIKE matches a kind on every engine. The secret
    signs every delivery; while a rotation's overlap lasts the previous one signs too."""

    __tablename__ = WEBHOOK_SUBSCRIPTIONS

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[str] = mapped_column(Text)
    agent_type: Mapped[str | None] = mapped_column(String(64))
    workflow: Mapped[str | None] = mapped_column(String(128))
    description: Mapped[str | None] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean)
    secret: Mapped[str] = mapped_column(String(128))
    previous_secret: Mapped[str | None] = mapped_column(String(128))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    secret_rotated_at: Mapped[datetime | None] = mapped_column(Timestamp)
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)

    __table_args__ = (Index("ix_webhook_subscriptions_tenant_enabled", "tenant", "enabled"),)


class WebhookCallbackSecretRow(Base):
    """The secret that signs a tenant's task callbacks (`callback_url`), made on first use."""

    __tablename__ = WEBHOOK_CALLBACK_SECRETS

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128))
    previous_secret: Mapped[str | None] = mapped_column(String(128))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class WebhookDeliveryRow(Base):
    """One event for one receiver (the outbox): committed with the event that causes it, sent
    until delivered or `expires_at`. `id` is the `webhook-id` receivers dedupe by; `seq` orders
    the deliveries of one `order_key` (receiver and task or run), which go out one at a time."""

    __tablename__ = WEBHOOK_DELIVERIES

    seq: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(80), unique=True)
    tenant: Mapped[str] = mapped_column(String(64))
    subscription_id: Mapped[str | None] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(Text)
    order_key: Mapped[str] = mapped_column(String(80))
    event_kind: Mapped[str] = mapped_column(String(40))
    task_id: Mapped[str | None] = mapped_column(String(32))
    run_id: Mapped[str | None] = mapped_column(String(32))
    payload: Mapped[Any] = mapped_column(JsonColumn)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    next_attempt_at: Mapped[datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)
    delivered_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_order_status", "order_key", "status", "seq"),
        Index("ix_webhook_deliveries_tenant_seq", "tenant", "seq"),
        Index("ix_webhook_deliveries_task", "task_id"),
        {"sqlite_autoincrement": True},  # attempts name a delivery by seq: never reuse one
    )


class WebhookAttemptRow(Base):
    """One try at sending a delivery: the receiver's status (None when no answer came), the
    error, the start of its answer, and how long it took."""

    __tablename__ = WEBHOOK_ATTEMPTS

    delivery_seq: Mapped[int] = mapped_column(EventId, primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(Timestamp)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float)


webhook_subscriptions_table = cast(Table, WebhookSubscriptionRow.__table__)
webhook_callback_secrets_table = cast(Table, WebhookCallbackSecretRow.__table__)
webhook_deliveries_table = cast(Table, WebhookDeliveryRow.__table__)
webhook_attempts_table = cast(Table, WebhookAttemptRow.__table__)
