"""Request bodies of the HTTP API (strict pydantic models) and the shapes of its task answers.

Guarantees: every body model rejects unknown fields (`extra="forbid"`) and values of the wrong
type (no silent coercion of strings to numbers); the ingress turns each failure into the
`invalid_request` envelope naming the field. No body nests deeper than the depth limit
(`serve_apps.middleware.BodyLimitMiddleware` refuses it before it is parsed). Range rules the orchestrator owns (priority,
timeouts, attempts) are checked there, once, so both the API and the Python client share them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve_apps.permissions import ROLES
from storage.messages import NAME_PATTERN as _NAME
from storage.storable import nul_location

_USERNAME = r"^[A-Za-z0-9][A-Za-z0-9_.@+\-]{0,63}$"
ROLE_PATTERN = "^(" + "|".join(ROLES) + ")$"


class StrictBody(BaseModel):
    """Base of every request body: unknown fields, type coercion and NUL characters in any
    string are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nul_characters(cls, data: Any) -> Any:
        found = nul_location(data)
        if found:
            raise ValueError(f"{found} holds a NUL character (\\u0000), which is not allowed")
        return data


class LoginBody(StrictBody):
    tenant: str = Field(default="default", min_length=1, max_length=64)
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class RefreshBody(StrictBody):
    refresh_token: str = Field(min_length=1, max_length=8192)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int


class ApiKeyBody(StrictBody):
    name: str = Field(min_length=1, max_length=100)
    role: str = Field(pattern=ROLE_PATTERN)
    expires_in_s: int | None = Field(default=None, ge=60, le=366 * 86400)


class UserBody(StrictBody):
    """A new user; the password must also meet `serve_apps.passwords`' policy."""

    username: str = Field(pattern=_USERNAME)
    password: str = Field(min_length=1, max_length=4096)
    role: str = Field(pattern=ROLE_PATTERN)


class RoleBody(StrictBody):
    role: str = Field(pattern=ROLE_PATTERN)


class TaskBody(StrictBody):
    description: str = Field(min_length=1)
    payload: dict[str, Any] = Field(default_factory=dict)
    agent_type: str | None = Field(default=None, pattern=_NAME)
    priority: int = 0
    timeout_s: float | None = None
    max_attempts: int | None = None
    batch_id: str | None = Field(default=None, min_length=1, max_length=64)
    callback_url: str | None = Field(default=None, min_length=1, max_length=2048,
                                     description="Called (signed, like a webhook) when the "
                                                 "task finishes: succeeded, failed, dead or "
                                                 "cancelled")

    model_config = ConfigDict(extra="forbid", strict=True,
                              json_schema_extra={"examples": [{
                                  "description": "add the numbers",
                                  "payload": {"numbers": [1, 2, 3]},
                                  "agent_type": "calculator"}]})


class FeedbackBody(StrictBody):
    agent_type: str = Field(pattern=_NAME)


class RouteBody(StrictBody):
    description: str = Field(min_length=1)


class ScaleBody(StrictBody):
    """Either `replicas` (pin the pool at that size), or `min_replicas` and/or `max_replicas`
    (autoscaling bounds), or `reset` (the configured bounds again). What is set is kept
    across orchestrator restarts until reset."""

    replicas: int | None = Field(default=None, ge=0, le=256)
    min_replicas: int | None = Field(default=None, ge=0, le=256)
    max_replicas: int | None = Field(default=None, ge=0, le=256)
    reset: bool = False


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any]
    request_id: str | None


class ErrorEnvelope(BaseModel):
    """The body of every error answer (`serve_apps.http_errors.envelope`)."""

    error: ErrorDetail


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]


class TaskErrorOut(BaseModel):
    code: str
    message: str
    retryable: bool
    error_type: str
    details: dict[str, Any]


class LlmUsageOut(BaseModel):
    """What a task's model calls used: tokens in and out, their cost in US dollars, and how
    many calls."""

    input_tokens: int
    output_tokens: int
    cost_usd: float
    calls: int


class TaskOut(BaseModel):
    """A task as the API shows it (`storage.messages.Task.to_json`). `cpu_s` and `wall_s` are
    its cost so far: CPU and wall seconds summed over its finished attempts; `llm_usage`, when
    the task made model calls, their tokens and cost (read one task at a time: absent from
    lists). A payload, route,
    result or error `details` stored too deep to show (before the depth limit existed) is
    `{"unreadable": "nested deeper than 128 levels"}`, so such a row never fails a page."""

    id: str
    description: str
    payload: dict[str, Any]
    status: str
    agent_type: str | None
    tenant: str
    priority: int
    attempts: int
    max_attempts: int
    timeout_s: float
    created_at: str
    updated_at: str
    idempotency_key: str | None
    batch_id: str | None
    callback_url: str | None = None
    route: dict[str, Any] | None
    result: Any
    error: TaskErrorOut | None
    finished_at: str | None
    cpu_s: float
    wall_s: float
    llm_usage: LlmUsageOut | None = None


class TaskPageOut(BaseModel):
    tasks: list[TaskOut]
    next_cursor: str | None


class AttemptOut(BaseModel):
    """One attempt of a task. `duration_s` (wall) and `cpu_s` are its cost, null while it runs
    or when it was not measured (an attempt lost with its replica)."""

    number: int
    replica: str
    outcome: str
    started_at: str
    finished_at: str | None
    duration_s: float | None
    cpu_s: float | None
    error: TaskErrorOut | None


class AttemptsOut(BaseModel):
    attempts: list[AttemptOut]
