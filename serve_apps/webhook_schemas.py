"""Request bodies of the webhook and inbox routes (`serve_apps.routes.webhooks`,
`serve_apps.routes.inbox`): strict, every field bounded, checked before anything reaches the
platform. What only the platform can judge (event kinds, where a URL resolves, that an agent
type exists) is checked there, once, for the API and the Python client alike.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from serve_apps.schemas import StrictBody
from storage.messages import NAME_PATTERN

MAX_URL_CHARS = 2048
MAX_OVERLAP_S = 30 * 86400.0



class WebhookBody(StrictBody):
    """A subscription: `url` receives the tenant's `events` (kinds such as `task.succeeded`,
    or `["*"]` for all), optionally only those of one `agent_type` or `workflow`."""

    url: str = Field(min_length=1, max_length=MAX_URL_CHARS)
    events: list[str] = Field(min_length=1, max_length=32)
    agent_type: str | None = Field(default=None, pattern=NAME_PATTERN)
    workflow: str | None = Field(default=None, min_length=1, max_length=128)
    description: str | None = Field(default=None, max_length=200)
    enabled: bool = True

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{
        "url": "https://hooks.example.com/ymera", "events": ["task.succeeded", "task.failed"],
        "description": "finished tasks to our ticketing system"}]})


class WebhookChanges(StrictBody):
    """The fields of a subscription to change; the others stay. `agent_type`, `workflow` and
    `description` may be set to null (no filter, no description); the others may not."""

    url: str | None = Field(default=None, min_length=1, max_length=MAX_URL_CHARS)
    events: list[str] | None = Field(default=None, min_length=1, max_length=32)
    agent_type: str | None = Field(default=None, pattern=NAME_PATTERN)
    workflow: str | None = Field(default=None, min_length=1, max_length=128)
    description: str | None = Field(default=None, max_length=200)
    enabled: bool | None = None

    @field_validator("url", "events", "enabled", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("cannot be null (leave it out to keep it)")
        return value

    @model_validator(mode="after")
    def _something_to_change(self) -> WebhookChanges:
        if not self.model_fields_set:
            raise ValueError("give at least one field to change")
        return self

    def changes(self) -> dict[str, Any]:
        """Only the fields the request named."""
        return self.model_dump(exclude_unset=True)


class RotateBody(StrictBody):
    """How long the old secret keeps signing alongside the new one (default a day)."""

    overlap_s: float = Field(default=86400.0, ge=0, le=MAX_OVERLAP_S)


class MessageBody(StrictBody):
    """A message to an agent type's inbox: any JSON value but null as `body`, and an optional
    `subject`. An agent type that declares `on_message` starts a task from it."""

    body: Any
    subject: str | None = Field(default=None, min_length=1, max_length=200)

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{
        "subject": "new dataset", "body": {"payload": {"rows": [{"x": 1, "y": 3}]}}}]})

    @field_validator("body", mode="before")
    @classmethod
    def _body_not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("a message body cannot be null")
        return value
