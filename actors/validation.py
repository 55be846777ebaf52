"""Checks a submitted task before anything is stored: every rule, one clear message each.

Every way in (HTTP, the Python client, batch lines) comes through here, so every limit holds
for all of them: among them the payload's size and its nesting depth (the path where the depth
limit is crossed is named)."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from actors.config import OrchestratorConfig
from ml.router import MAX_DESCRIPTION_CHARS
from storage.errors import InvalidRequest
from storage.messages import NAME, TaskRequest
from storage.storable import depth_excess, nul_location
from storage.webhook_records import check_webhook_url

MAX_ATTEMPTS_LIMIT = 20
PRIORITY_RANGE = (-100, 100)


def _fail(index: int | None, field: str, message: str, **more: Any) -> InvalidRequest:
    where = f"task {index}: " if index is not None else ""
    details: dict[str, Any] = {"field": field, **more}
    if index is not None:
        details["index"] = index
    return InvalidRequest(f"{where}{field} {message}", details)


def json_value_problem(value: Any, config: OrchestratorConfig, root: str
                       ) -> tuple[str, dict[str, Any]] | None:
    """What keeps `value` (a payload, a workflow's input) from being stored, as a message to
    follow its name and more details; None when it may be: it must be plain JSON within the
    depth and size limits, without a NUL character (PostgreSQL cannot store one)."""
    if (too_deep := depth_excess(value, config.max_payload_depth, root)) is not None:
        return (f"is nested deeper than {config.max_payload_depth} levels at {too_deep}",
                {"path": too_deep, "limit": config.max_payload_depth})
    try:
        size = len(json.dumps(value, allow_nan=False, separators=(",", ":")))
    except (TypeError, ValueError) as exc:
        return f"is not valid JSON: {exc}", {}
    if size > config.max_payload_bytes:
        return f"is {size} bytes; the limit is {config.max_payload_bytes}", {}
    if (found := nul_location(value)) is not None:
        return f"holds a NUL character (\\u0000) at {found}, which is not allowed", {}
    return None


def validate_request(request: Any, config: OrchestratorConfig, index: int | None = None
                     ) -> TaskRequest:
    """The request with defaults filled in, or `InvalidRequest` naming the first wrong field."""
    if isinstance(request, dict):
        unknown = set(request) - {f.name for f in dataclasses.fields(TaskRequest)}
        if unknown:
            raise _fail(index, sorted(unknown)[0], "is not a task field")
        try:
            request = TaskRequest(**request)
        except TypeError as exc:
            raise _fail(index, "task", f"is incomplete: {exc}") from exc
    if not isinstance(request, TaskRequest):
        raise _fail(index, "task", f"must be a TaskRequest or dict, not {type(request).__name__}")

    description = request.description
    if not isinstance(description, str) or not description.strip():
        raise _fail(index, "description", "must be a non-empty string")
    if "\x00" in description:
        raise _fail(index, "description", "holds a NUL character (\\u0000), which is not allowed")
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise _fail(index, "description", f"is {len(description)} characters; the limit is "
                    f"{MAX_DESCRIPTION_CHARS}")
    if not isinstance(request.payload, dict):
        raise _fail(index, "payload", f"must be a JSON object, not {type(request.payload).__name__}")
    if (problem := json_value_problem(request.payload, config, "payload")) is not None:
        raise _fail(index, "payload", problem[0], **problem[1])
    if request.agent_type is not None and not isinstance(request.agent_type, str):
        raise _fail(index, "agent_type", "must be a string")
    if isinstance(request.priority, bool) or not isinstance(request.priority, int) or not (
        PRIORITY_RANGE[0] <= request.priority <= PRIORITY_RANGE[1]
    ):
        raise _fail(index, "priority", f"must be an integer from {PRIORITY_RANGE[0]} to "
                    f"{PRIORITY_RANGE[1]}")
    timeout_s = config.default_timeout_s if request.timeout_s is None else request.timeout_s
    if (isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float))
            or not math.isfinite(timeout_s) or not 0 < timeout_s <= config.max_timeout_s):
        raise _fail(index, "timeout_s", f"must be a number of seconds above 0 and at most "
                    f"{config.max_timeout_s:g}")
    max_attempts = config.retry.max_attempts if request.max_attempts is None else request.max_attempts
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or not (
        1 <= max_attempts <= MAX_ATTEMPTS_LIMIT
    ):
        raise _fail(index, "max_attempts", f"must be an integer from 1 to {MAX_ATTEMPTS_LIMIT}")
    key = request.idempotency_key
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 200
                            or "\x00" in key):
        raise _fail(index, "idempotency_key",
                    "must be a string of 1 to 200 characters, without NUL")
    if not isinstance(request.tenant, str) or not NAME.fullmatch(request.tenant):
        raise _fail(index, "tenant", "must be 1 to 64 letters, digits, '_', '.', ':' or '-'")
    if request.batch_id is not None and (
        not isinstance(request.batch_id, str) or not NAME.fullmatch(request.batch_id)
    ):
        raise _fail(index, "batch_id", "must be 1 to 64 letters, digits, '_', '.', ':' or '-'")
    if request.callback_url is not None:
        try:
            check_webhook_url(request.callback_url, "callback_url")
        except InvalidRequest as exc:
            raise _fail(index, "callback_url", exc.message.removeprefix("callback_url ")) \
                from exc
    return dataclasses.replace(request, timeout_s=float(timeout_s), max_attempts=max_attempts)
