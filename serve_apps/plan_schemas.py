"""Request body and answer shape of `POST /api/v1/plan` (`serve_apps.routes.plan`).

The body is a `schemas.StrictBody`: unknown fields, values of the wrong type and NUL
characters are refused with the `invalid_request` envelope naming the field; the request text
is at most `actors.planning.MAX_REQUEST_CHARS` characters. Whether the plan is valid is
decided once, by the orchestrator (`actors.planning`), for HTTP and Python alike.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from actors.planning import MAX_REQUEST_CHARS
from serve_apps.schemas import StrictBody


class PlanBody(StrictBody):
    """What the workflow should do, in words; `run` starts the plan at once (it needs the
    `workflows:submit` permission too) with `input` as the run's input, whose shape (never its
    values) also guides the plan; `model` names a model group (default: the configured
    default)."""

    request: str = Field(min_length=1, max_length=MAX_REQUEST_CHARS)
    run: bool = False
    input: Any = None
    model: str | None = Field(default=None, min_length=1, max_length=64)

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "examples": [{"request": "Sum the revenue per region of the rows, then the total "
                                 "of those sums", "input": {"rows": [
                                     {"region": "north", "revenue": 120.5}]}}]})


class PlanUsageOut(BaseModel):
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    models: list[str]


class PlanOut(BaseModel):
    """The checked plan: `document` (the workflow to review, edit and submit to
    `POST /workflows`), `rendered` (it as text), `attempts` (model calls it took), `problems`
    (why the earlier attempts were refused), `run_id` (the run started with `run`, else null)
    and the model calls' `usage`."""

    document: dict[str, Any]
    rendered: str
    attempts: int
    problems: list[str]
    run_id: str | None
    usage: PlanUsageOut
