"""The platform's shared vocabulary: the records that cross actor boundaries and are stored.

Every package imports these from here (this is the bottom layer, so all layers may). They are frozen
dataclasses: cheap to pickle between Ray workers and safe to share between coroutines.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import uuid
from datetime import datetime, timezone
from typing import Any

from storage.storable import readable

JSON = dict[str, Any]

AGENT_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]{1,63}\Z")
"""An agent type's name (`AgentSpec.name`, a message's recipient): lowercase letters, digits
and underscores, starting with a letter, 2 to 64 long."""
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}"
NAME = re.compile(rf"^{_NAME}\Z")
"""A tenant, batch id or requested agent type: a letter or digit, then up to 63 of those or
`_.:-`."""
NAME_PATTERN = rf"^{_NAME}$"
"""`NAME` for pydantic's `Field(pattern=...)` (whose `$` is the end of the text)."""


class TaskStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.DEAD, TaskStatus.CANCELLED}
)


class AttemptOutcome(str, enum.Enum):
    """How one attempt ended. `running` while it has not."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the agent raised a non-retryable error
    ERROR = "error"  # the agent raised a retryable error
    TIMEOUT = "timeout"
    LOST = "lost"  # the replica died, or the orchestrator restarted under it
    CANCELLED = "cancelled"


def new_task_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    """`value` as UTC (naive means UTC): SQLite keeps no offset, so every stored time is UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


@dataclasses.dataclass(frozen=True)
class TaskRequest:
    """What a client asks for. Validated by the orchestrator before anything is stored."""

    description: str
    payload: JSON = dataclasses.field(default_factory=dict)
    agent_type: str | None = None
    priority: int = 0
    timeout_s: float | None = None
    max_attempts: int | None = None
    idempotency_key: str | None = None
    tenant: str = "default"
    batch_id: str | None = None
    callback_url: str | None = None  # told, signed, when the task finishes (docs/webhooks.md)


@dataclasses.dataclass(frozen=True)
class Neighbour:
    """A labelled routing example found near a task's description, with its similarity (the
    cosine of the embeddings plus the router's word-overlap bonus, see `ml.lexical`). `source`
    says where the example came from: `declared` by its agent type, `learned` from a task that
    succeeded, or `feedback` from a user."""

    text: str
    agent_type: str
    similarity: float
    source: str = "declared"

    def to_json(self) -> JSON:
        return dataclasses.asdict(self)


class RouteMethod(str, enum.Enum):
    REQUESTED = "requested"  # the submitter named the agent type
    SEMANTIC = "semantic"  # the router chose it from the description
    FALLBACK = "fallback"  # the router had no confident route; the configured fallback took it


@dataclasses.dataclass(frozen=True)
class RouteDecision:
    """Which agent type takes a task, how sure the router is, and why: the ranked candidates
    (type, score), and the nearest examples that drove the choice (`nearest`)."""

    agent_type: str
    confidence: float = 1.0
    candidates: tuple[tuple[str, float], ...] = ()
    reason: str = "requested"
    method: RouteMethod = RouteMethod.REQUESTED
    similarity: float | None = None
    nearest: tuple[Neighbour, ...] = ()
    routed: bool = True  # false: no confident route; `agent_type` is then the top candidate

    def to_json(self) -> JSON:
        return {
            "agent_type": self.agent_type,
            "routed": self.routed,
            "method": self.method.value,
            "confidence": self.confidence,
            "similarity": self.similarity,
            "candidates": [list(c) for c in self.candidates],
            "nearest": [n.to_json() for n in self.nearest],
            "reason": self.reason,
        }


@dataclasses.dataclass(frozen=True)
class TaskError:
    """Why an attempt or a task failed: a stable code, a human message, and the exception type."""

    code: str
    message: str
    retryable: bool = False
    error_type: str = ""
    details: JSON = dataclasses.field(default_factory=dict)

    def to_json(self) -> JSON:
        """As JSON; details too deep to show (stored before the depth limit) are a marker."""
        return {"code": self.code, "message": self.message, "retryable": self.retryable,
                "error_type": self.error_type, "details": readable(self.details)}

    @classmethod
    def from_json(cls, data: JSON | None) -> TaskError | None:
        return None if data is None else cls(**data)


@dataclasses.dataclass(frozen=True)
class AgentTask:
    """What an agent replica receives: one attempt of one task."""

    task_id: str
    attempt: int
    agent_type: str
    description: str
    payload: JSON
    timeout_s: float
    tenant: str = "default"


@dataclasses.dataclass(frozen=True)
class AgentResult:
    """What a replica returns for one attempt: a JSON result, or the error that ended it, with the
    attempt's wall time (`duration_s`) and the CPU time it used in the replica (`cpu_s`)."""

    task_id: str
    attempt: int
    replica: str
    ok: bool
    result: Any = None
    error: TaskError | None = None
    duration_s: float = 0.0
    cpu_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One recorded attempt of a task (the dead-letter history is a list of these). `duration_s`
    (wall) and `cpu_s` are its cost, None while it runs or when it was never measured."""

    task_id: str
    number: int
    replica: str
    started_at: datetime
    outcome: AttemptOutcome = AttemptOutcome.RUNNING
    finished_at: datetime | None = None
    error: TaskError | None = None
    duration_s: float | None = None
    cpu_s: float | None = None


@dataclasses.dataclass(frozen=True)
class Task:
    """A task as stored: the request, its routing, where its lifecycle stands, and its outcome.
    `cpu_s` and `wall_s` are its cost: totals over all its finished attempts. `llm_usage` is
    what its model calls used, `{"input_tokens", "output_tokens", "cost_usd", "calls"}`, when
    it made any (read from the model usage records, not stored on the task row)."""

    id: str
    description: str
    payload: JSON
    status: TaskStatus
    agent_type: str | None
    tenant: str
    priority: int
    attempts: int
    max_attempts: int
    timeout_s: float
    created_at: datetime
    updated_at: datetime
    idempotency_key: str | None = None
    batch_id: str | None = None
    route: JSON | None = None
    result: Any = None
    error: TaskError | None = None
    finished_at: datetime | None = None
    cpu_s: float = 0.0
    wall_s: float = 0.0
    llm_usage: JSON | None = None
    callback_url: str | None = None

    def to_json(self) -> JSON:
        """As JSON. A payload, route or result too deep to show (stored before the depth limit
        existed) is `storage.storable.unreadable_marker`, so it never fails a page."""
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        for key in ("payload", "route", "result"):
            data[key] = readable(data[key])
        data["status"] = self.status.value
        data["error"] = self.error.to_json() if self.error else None
        for key in ("created_at", "updated_at", "finished_at"):
            value = getattr(self, key)
            data[key] = value.isoformat() if value else None
        return data


@dataclasses.dataclass(frozen=True)
class TaskEvent:
    """One line of a task's append-only event log."""

    id: int
    task_id: str
    kind: str
    at: datetime
    attempt: int | None = None
    data: JSON | None = None


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one replica of an agent type reserves on a Ray node."""

    num_cpus: float = 0.25
    memory_mb: int | None = None
    custom: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class AgentContext:
    """What a replica tells its agent about where it runs. `settings` holds the platform's
    agent-facing settings (for example webhook signing and SSRF allowances); `log_format` and
    `log_level` are how its process logs (see `actors.logs.configure_logging`);
    `max_result_depth` how deep a result may nest (deeper fails the attempt)."""

    replica: str
    namespace: str
    database_url: str
    settings: JSON = dataclasses.field(default_factory=dict)
    log_format: str = "auto"
    log_level: str = "INFO"
    max_result_depth: int = 64


@dataclasses.dataclass(frozen=True)
class AgentSpec:
    """What an agent type declares about itself. `name` is API: it never changes once published.

    `payload_hint` is an example payload the agent accepts (a JSON object), shown to the workflow
    planner (`ml.llm.planner`) so a model writes payloads of the right shape; None: no hint.

    `on_message` says what a message to this type's inbox does: None (the default) keeps it for
    a reader to list and acknowledge; "task" starts a task of this type from it
    (`Agent.message_task` maps the message, `actors.message_pump` starts it and replies)."""

    name: str
    description: str
    capabilities: tuple[str, ...]
    examples: tuple[str, ...]
    resources: Resources = Resources()
    concurrency: int = 8
    replicas: int = 1
    payload_hint: Any = None
    on_message: str | None = None


@dataclasses.dataclass(frozen=True)
class InboxMessage:
    """One message in an agent type's inbox: who sent it, for which task, and whether the
    recipient has acknowledged it (`acked_at`).

    A reply names the message it answers (`in_reply_to`). A message to a type that starts work
    from messages (`AgentSpec.on_message`) records the task it started (`started_task_id`) and
    when its reply was settled (`replied_at`: the reply posted, or none was owed)."""

    id: str
    recipient: str
    body: Any
    created_at: datetime
    tenant: str = "default"
    sender: str | None = None
    task_id: str | None = None
    subject: str | None = None
    acked_at: datetime | None = None
    in_reply_to: str | None = None
    started_task_id: str | None = None
    replied_at: datetime | None = None

    def to_json(self) -> JSON:
        data = dataclasses.asdict(self)
        for key in ("created_at", "acked_at", "replied_at"):
            value = getattr(self, key)
            data[key] = value.isoformat() if value else None
        return data


@dataclasses.dataclass(frozen=True)
class BatchStatus:
    """How the tasks of one batch stand, for one tenant: a count for every task status (zeros
    included), their total, when the first was created and when the last one finished.

    Only tasks are counted: input lines a batch job rejected never became tasks (they are
    reported, with their line numbers, in the job's results)."""

    batch_id: str
    tenant: str
    counts: dict[str, int]
    first_created_at: datetime | None = None
    last_finished_at: datetime | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        return sum(n for status, n in self.counts.items() if TaskStatus(status).is_terminal)

    def to_json(self) -> JSON:
        return {
            "batch_id": self.batch_id, "tenant": self.tenant, "counts": dict(self.counts),
            "total": self.total, "finished": self.finished,
            "unfinished": self.total - self.finished,
            "first_created_at": self.first_created_at.isoformat()
            if self.first_created_at else None,
            "last_finished_at": self.last_finished_at.isoformat()
            if self.last_finished_at else None,
        }
