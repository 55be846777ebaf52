"""The one place where platform errors become HTTP responses: status, headers and envelope.

Every error code the platform raises has an explicit rule in `HTTP_RULES`; the envelope is
always

    {"error": {"code": ..., "message": ..., "details": {...}, "request_id": ...}}

Guarantees:
- 4xx messages and details are written for the caller and shown as raised.
- 5xx responses never show the raised message or details, which may hold internals (addresses,
  paths, a dependency's exception text): each code shows a fixed public message instead, and
  the raised one is for the server's log. Internal-only errors and anything that is not a
  `YmeraError` become `500 internal_error` with a generic message.
- back-pressure 429s (`queue_full`, `rate_limited`), retryable 503s (the platform or its storage
  unavailable: an outage the orchestrator reports as `platform_unavailable`, or the API's own
  store failing) and a model provider's outage (502) carry `Retry-After` in whole seconds (at
  least 1); a spent token budget is a 429 without it (it frees at its next period); 401
  responses carry `WWW-Authenticate: Bearer`; 405 responses carry `Allow` with the methods the
  route takes.
- An error class without its own rule gets its nearest ancestor's (a new `StorageError`
  subclass is a 503), so a forgotten mapping never turns a known failure into a leak.

`invalid_request` is 400, not 422: it covers every kind of bad input (shape, range, limits,
unknown ids in the body), and one code keeps one status; the ingress translates FastAPI's own
request-validation failures into `invalid_request` too. 422 is kept for well-formed requests
the platform cannot act on: no confident route, a task input its agent rejects.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Final

from storage.errors import YmeraError

DEFAULT_RETRY_AFTER_S: Final = 5.0
INTERNAL_CODE: Final = "internal_error"
INTERNAL_MESSAGE: Final = "internal error"


@dataclasses.dataclass(frozen=True)
class HttpRule:
    """How one error code is answered over HTTP."""

    status: int
    public_message: str | None = None  # shown instead of the raised message; details dropped
    retry_after: bool = False  # send Retry-After (from the error's `retry_after_s`, if it has one)
    internal: bool = False  # shown as `internal_error`: the caller should never meet this code


_INTERNAL: Final = HttpRule(500, INTERNAL_MESSAGE, internal=True)

HTTP_RULES: Final[dict[str, HttpRule]] = {
    # the request is wrong; nothing was changed
    "invalid_request": HttpRule(400),
    "unauthenticated": HttpRule(401),
    "forbidden": HttpRule(403),
    "not_found": HttpRule(404),
    "method_not_allowed": HttpRule(405),
    "conflict": HttpRule(409),
    "payload_too_large": HttpRule(413),
    "no_confident_route": HttpRule(422),
    "invalid_task_input": HttpRule(422),
    # back-pressure: come back later
    "queue_full": HttpRule(429, retry_after=True),
    "rate_limited": HttpRule(429, retry_after=True),
    "platform_unavailable": HttpRule(
        503, "the platform is unavailable; try again shortly", retry_after=True),
    "router_unavailable": HttpRule(503, "the task router is unavailable"),
    "embedding_model_unavailable": HttpRule(503, "the task router is unavailable"),
    "storage_error": HttpRule(503, "storage is unavailable", retry_after=True),
    "schema_out_of_date": HttpRule(
        503, "storage is not ready: its schema is out of date and must be migrated"),
    # the model gateway
    "llm_config_error": HttpRule(400),
    # the platform has no model configured: a well-formed request this platform cannot act on
    # (a 4xx: a caller must not raise the server-error rate, trip 5xx alerts or retry it)
    "no_model_configured": HttpRule(422),
    "bad_model_request": HttpRule(422),
    "plan_refused": HttpRule(422),
    "budget_exceeded": HttpRule(429),  # a spent token budget frees at its next period
    "token_budget_exceeded": HttpRule(429),
    "llm_error": HttpRule(502, "the model provider failed"),
    "provider_unavailable": HttpRule(502, "the model provider is unavailable", retry_after=True),
    "no_deployment_answered": HttpRule(502, "no model deployment answered", retry_after=True),
    "stream_broken": HttpRule(502, "the model's answer broke off"),
    "provider_timeout": HttpRule(504, "the model provider did not answer in time"),
    # never meant for a caller: an agent's or a Ray call's failure is recorded on the task
    "error": _INTERNAL,
    "agent_error": _INTERNAL,
    "retryable_agent_error": _INTERNAL,
    "replica_lost": _INTERNAL,
    "call_failed": _INTERNAL,
    "timeout": _INTERNAL,
    "cancelled": _INTERNAL,
}


def rule_for(exc: BaseException) -> HttpRule:
    """The rule of `exc`'s code, else of its nearest ancestor's; `500 internal_error` otherwise."""
    if not isinstance(exc, YmeraError):
        return _INTERNAL
    for cls in type(exc).__mro__:
        code = vars(cls).get("code")
        if isinstance(code, str) and code in HTTP_RULES:
            return HTTP_RULES[code]
    return _INTERNAL


def status_for(exc: BaseException) -> int:
    """The HTTP status that answers `exc`."""
    return rule_for(exc).status


def headers_for(exc: BaseException) -> dict[str, str]:
    """Headers the response to `exc` must carry (`Retry-After`, `WWW-Authenticate`, `Allow`),
    maybe none."""
    rule = rule_for(exc)
    headers: dict[str, str] = {}
    if rule.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    allowed = getattr(exc, "allowed", None)
    if rule.status == 405 and isinstance(allowed, str) and allowed:
        headers["Allow"] = allowed
    if rule.retry_after:
        headers["Retry-After"] = str(_retry_after_s(exc))
    return headers


def envelope(exc: BaseException, request_id: str | None) -> dict[str, Any]:
    """The JSON body that answers `exc`; it never holds internals of a 5xx or unknown error."""
    rule = rule_for(exc)
    details: dict[str, Any]
    if rule.internal or not isinstance(exc, YmeraError):
        code, message, details = INTERNAL_CODE, INTERNAL_MESSAGE, {}
    elif rule.public_message is not None:
        code, message, details = exc.code, rule.public_message, {}
    else:
        code, message, details = exc.code, exc.message, dict(exc.details)
    if rule.retry_after:
        details["retry_after_s"] = _retry_after_s(exc)
    return {"error": {"code": code, "message": message, "details": details,
                      "request_id": request_id}}


def _retry_after_s(exc: BaseException) -> int:
    """Whole seconds, rounded up, at least 1 (HTTP's Retry-After takes no fractions)."""
    seconds = getattr(exc, "retry_after_s", None)
    if (not isinstance(seconds, (int, float)) or isinstance(seconds, bool)
            or not math.isfinite(seconds)):
        seconds = DEFAULT_RETRY_AFTER_S
    return max(1, math.ceil(seconds))
