"""SQLAlchemy models of what the platform keeps: tasks, their attempts, their event log, the
messages waiting in agents' inboxes, the routing examples the router learned, the pool bounds
operators set, the HTTP API's users, API keys, refresh tokens and audit log, workflow runs
with their steps and events, the LLM gateway's breakers, token budgets, usage and cache, and
the knowledge collections' documents, chunks and vectors.

Table names live here (and, for the knowledge collections, in `storage.knowledge_models`,
imported at the end of this module) and nowhere else. The schema is created and changed only by the Alembic
migrations in `storage/migrations`; these models must match the latest migration (a test checks).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Table, Text, false,
)
from sqlalchemy.orm import Mapped, mapped_column

from storage.model_base import Base, EventId, JsonColumn, Timestamp  # Base: re-exported

TASKS = "tasks"
TASK_ATTEMPTS = "task_attempts"
TASK_EVENTS = "task_events"
AGENT_MESSAGES = "agent_messages"
ROUTING_EXAMPLES = "routing_examples"
USERS = "users"
API_KEYS = "api_keys"
REFRESH_TOKENS = "refresh_tokens"
AUDIT_EVENTS = "audit_events"
POOL_BOUNDS = "pool_bounds"
WORKFLOW_RUNS = "workflow_runs"
WORKFLOW_STEPS = "workflow_steps"
WORKFLOW_EVENTS = "workflow_events"



class TaskRow(Base):
    __tablename__ = TASKS

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), default="default")
    description: Mapped[str] = mapped_column(Text)
    payload: Mapped[Any] = mapped_column(JsonColumn)
    agent_type: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    timeout_s: Mapped[float] = mapped_column(Float)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    batch_id: Mapped[str | None] = mapped_column(String(64))
    route: Mapped[Any | None] = mapped_column(JsonColumn)
    result: Mapped[Any | None] = mapped_column(JsonColumn)
    error: Mapped[Any | None] = mapped_column(JsonColumn)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    cpu_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    wall_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    callback_url: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_tasks_tenant_idempotency_key", "tenant", "idempotency_key", unique=True),
        Index("ix_tasks_status_created", "status", "created_at"),
        Index("ix_tasks_created", "created_at", "id"),
        Index("ix_tasks_tenant_created", "tenant", "created_at", "id"),
        Index("ix_tasks_batch", "batch_id"),
    )


class AttemptRow(Base):
    __tablename__ = TASK_ATTEMPTS

    task_id: Mapped[str] = mapped_column(
        String(32), ForeignKey(f"{TASKS}.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    replica: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    duration_s: Mapped[float | None] = mapped_column(Float)
    error: Mapped[Any | None] = mapped_column(JsonColumn)
    cpu_s: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index("ix_task_attempts_started", "started_at"),)


class EventRow(Base):
    __tablename__ = TASK_EVENTS

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(Timestamp)
    attempt: Mapped[int | None] = mapped_column(Integer)
    data: Mapped[Any | None] = mapped_column(JsonColumn)


class MessageRow(Base):
    __tablename__ = AGENT_MESSAGES

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), default="default")
    recipient: Mapped[str] = mapped_column(String(64))
    sender: Mapped[str | None] = mapped_column(String(64))
    task_id: Mapped[str | None] = mapped_column(String(32))
    subject: Mapped[str | None] = mapped_column(String(200))
    body: Mapped[Any] = mapped_column(JsonColumn)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    acked_at: Mapped[datetime | None] = mapped_column(Timestamp)
    in_reply_to: Mapped[str | None] = mapped_column(String(32))
    started_task_id: Mapped[str | None] = mapped_column(String(32))
    replied_at: Mapped[datetime | None] = mapped_column(Timestamp)

    __table_args__ = (
        Index("ix_agent_messages_tenant_recipient_acked_created", "tenant", "recipient",
              "acked_at", "created_at"),
        Index("ix_agent_messages_recipient_unstarted", "recipient", "acked_at",
              "started_task_id", "created_at"),
        Index("ix_agent_messages_started_replied", "started_task_id", "replied_at"),
    )


class RoutingExampleRow(Base):
    __tablename__ = ROUTING_EXAMPLES

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    agent_type: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))
    task_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(Timestamp)

    __table_args__ = (
        Index("ix_routing_examples_tenant_type_source", "tenant", "agent_type", "source", "id"),
    )


class UserRow(Base):
    __tablename__ = USERS

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    username: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)

    __table_args__ = (
        Index("ix_users_tenant_username", "tenant", "username", unique=True),
        Index("ix_users_tenant", "tenant"),
    )


class ApiKeyRow(Base):
    __tablename__ = API_KEYS

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(128))
    created_by: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_used_at: Mapped[datetime | None] = mapped_column(Timestamp)

    __table_args__ = (Index("ix_api_keys_tenant", "tenant"),)


class RefreshTokenRow(Base):
    __tablename__ = REFRESH_TOKENS

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32))
    issued_at: Mapped[datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)
    replaced_by: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_refresh_tokens_user_id", "user_id"),)


class AuditEventRow(Base):
    __tablename__ = AUDIT_EVENTS

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(Timestamp)
    tenant: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str | None] = mapped_column(String(200))
    request_id: Mapped[str | None] = mapped_column(String(64))
    client: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[Any | None] = mapped_column(JsonColumn)

    __table_args__ = (Index("ix_audit_events_tenant_id", "tenant", "id"),)


class PoolBoundsRow(Base):
    """The replica bounds an operator set for one agent type's pool (equal bounds pin it);
    they replace the configured bounds until removed."""

    __tablename__ = POOL_BOUNDS

    agent_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    min_replicas: Mapped[int] = mapped_column(Integer)
    max_replicas: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class WorkflowRunRow(Base):
    """One run of a workflow: the spec it started with (never changed under it), its input,
    its status; unique per tenant by idempotency key."""

    __tablename__ = WORKFLOW_RUNS

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    spec: Mapped[Any] = mapped_column(JsonColumn)
    input: Mapped[Any | None] = mapped_column(JsonColumn)
    status: Mapped[str] = mapped_column(String(16))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[Any | None] = mapped_column(JsonColumn)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    deadline_at: Mapped[datetime | None] = mapped_column(Timestamp)
    generation: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    callback_url: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_workflow_runs_tenant_idempotency_key", "tenant", "idempotency_key",
              unique=True),
        Index("ix_workflow_runs_tenant_created", "tenant", "created_at", "id"),
        Index("ix_workflow_runs_status_created", "status", "created_at", "id"),
        Index("ix_workflow_runs_finished", "finished_at"),
    )


class WorkflowStepRow(Base):
    """One step of a run (one item of a mapped step: `map_index` >= 0; -1 when unmapped),
    linked to the task in `tasks` that executes it."""

    __tablename__ = WORKFLOW_STEPS

    run_id: Mapped[str] = mapped_column(
        String(32), ForeignKey(f"{WORKFLOW_RUNS}.id", ondelete="CASCADE"), primary_key=True
    )
    step_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    map_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(24))
    task_id: Mapped[str | None] = mapped_column(String(32))
    output: Mapped[Any | None] = mapped_column(JsonColumn)
    error: Mapped[Any | None] = mapped_column(JsonColumn)
    decision: Mapped[str | None] = mapped_column(String(16))
    decided_by: Mapped[str | None] = mapped_column(String(128))
    decided_at: Mapped[datetime | None] = mapped_column(Timestamp)
    decision_comment: Mapped[str | None] = mapped_column(Text)
    wake_at: Mapped[datetime | None] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)

    __table_args__ = (
        Index("ix_workflow_steps_wake", "wake_at"),
        Index("ix_workflow_steps_task", "task_id"),
    )


class WorkflowEventRow(Base):
    """One line of a run's append-only event log (what its stream replays from an id)."""

    __tablename__ = WORKFLOW_EVENTS

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(
        String(32), ForeignKey(f"{WORKFLOW_RUNS}.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    step_id: Mapped[str | None] = mapped_column(String(128))
    map_index: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(Timestamp)
    data: Mapped[Any | None] = mapped_column(JsonColumn)

    __table_args__ = (Index("ix_workflow_events_run", "run_id", "id"),)


# A declarative class's `__table__` is a `Table` at runtime; SQLAlchemy types it as the wider
# `FromClause`, which `insert()`, `update()` and `delete()` do not accept.
tasks_table = cast(Table, TaskRow.__table__)
attempts_table = cast(Table, AttemptRow.__table__)
events_table = cast(Table, EventRow.__table__)
messages_table = cast(Table, MessageRow.__table__)
routing_examples_table = cast(Table, RoutingExampleRow.__table__)
users_table = cast(Table, UserRow.__table__)
api_keys_table = cast(Table, ApiKeyRow.__table__)
refresh_tokens_table = cast(Table, RefreshTokenRow.__table__)
audit_events_table = cast(Table, AuditEventRow.__table__)
pool_bounds_table = cast(Table, PoolBoundsRow.__table__)
workflow_runs_table = cast(Table, WorkflowRunRow.__table__)
workflow_steps_table = cast(Table, WorkflowStepRow.__table__)
workflow_events_table = cast(Table, WorkflowEventRow.__table__)


# Language-model gateway state (circuit breakers, token budgets, usage, response cache).
LLM_BREAKERS = "llm_breakers"
LLM_BUDGETS = "llm_budgets"
LLM_BUDGET_PERIODS = "llm_budget_periods"
LLM_RESERVATIONS = "llm_reservations"
LLM_USAGE = "llm_usage"
LLM_CACHE = "llm_cache"


class LlmBreakerRow(Base):
    """The circuit-breaker state of one model deployment; `version` grows with every change
    (compare-and-set). Times are epoch seconds, comparable across gateway replicas."""

    __tablename__ = LLM_BREAKERS

    deployment: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    failures: Mapped[int] = mapped_column(Integer)
    window_started_at: Mapped[float] = mapped_column(Float)
    opened_at: Mapped[float | None] = mapped_column(Float)
    probe_until: Mapped[float | None] = mapped_column(Float)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class LlmBudgetRow(Base):
    """A tenant's token limit per period ("month", "day" or "total"); no row: no limit."""

    __tablename__ = LLM_BUDGETS

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[str] = mapped_column(String(8))
    limit_tokens: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class LlmBudgetPeriodRow(Base):
    """A tenant's token counters in one period ("2026-12", "2026-12-04" or "total"): tokens
    used, tokens reserved by calls in flight, and the limit they must stay within (None: none)."""

    __tablename__ = LLM_BUDGET_PERIODS

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    period_key: Mapped[str] = mapped_column(String(16), primary_key=True)
    limit_tokens: Mapped[int | None] = mapped_column(BigInteger)
    used_tokens: Mapped[int] = mapped_column(BigInteger)
    reserved_tokens: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class LlmReservationRow(Base):
    """Tokens set aside for one model call in flight, until reconciled, released or expired."""

    __tablename__ = LLM_RESERVATIONS

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    period_key: Mapped[str] = mapped_column(String(16))
    tokens: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)

    __table_args__ = (
        Index("ix_llm_reservations_tenant_expires", "tenant", "expires_at"),
        Index("ix_llm_reservations_expires", "expires_at"),
    )


class LlmUsageRow(Base):
    """The tokens and cost of one model call, by tenant and (when it ran for one) task."""

    __tablename__ = LLM_USAGE

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(Timestamp)
    tenant: Mapped[str] = mapped_column(String(64))
    task_id: Mapped[str | None] = mapped_column(String(32))
    deployment: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(128))
    input_tokens: Mapped[int] = mapped_column(Integer)
    output_tokens: Mapped[int] = mapped_column(Integer)
    cost: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        Index("ix_llm_usage_tenant_at", "tenant", "at"),
        Index("ix_llm_usage_tenant_task", "tenant", "task_id"),
    )


class LlmCacheRow(Base):
    """One cached model answer of a tenant, under the hash of its request, until `expires_at`."""

    __tablename__ = LLM_CACHE

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JsonColumn)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)

    __table_args__ = (Index("ix_llm_cache_expires", "expires_at"),)


llm_breakers_table = cast(Table, LlmBreakerRow.__table__)
llm_budgets_table = cast(Table, LlmBudgetRow.__table__)
llm_budget_periods_table = cast(Table, LlmBudgetPeriodRow.__table__)
llm_reservations_table = cast(Table, LlmReservationRow.__table__)
llm_usage_table = cast(Table, LlmUsageRow.__table__)
llm_cache_table = cast(Table, LlmCacheRow.__table__)


# The knowledge collections' tables (their own module, for size), on the same metadata and
# importable from here like every other table.
from storage.knowledge_models import (  # noqa: E402
    KNOWLEDGE_CHUNKS, KNOWLEDGE_COLLECTIONS, KNOWLEDGE_DOCUMENTS, KNOWLEDGE_UPLOADS,
    KnowledgeChunkRow, KnowledgeCollectionRow, KnowledgeDocumentRow, KnowledgeUploadRow,
    knowledge_chunks_table, knowledge_collections_table, knowledge_documents_table,
    knowledge_uploads_table,
)

# Events going out: webhook subscriptions, callback secrets, the delivery outbox and attempts.
from storage.webhook_models import (  # noqa: E402
    WEBHOOK_ATTEMPTS, WEBHOOK_CALLBACK_SECRETS, WEBHOOK_DELIVERIES, WEBHOOK_SUBSCRIPTIONS,
    WebhookAttemptRow, WebhookCallbackSecretRow, WebhookDeliveryRow, WebhookSubscriptionRow,
    webhook_attempts_table, webhook_callback_secrets_table, webhook_deliveries_table,
    webhook_subscriptions_table,
)
