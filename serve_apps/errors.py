"""Errors of the HTTP API layer: who may call, how often, and with how much.

    YmeraError (storage.errors)
    ├── Unauthenticated    no credentials, or credentials that do not verify       → 401
    ├── Forbidden          the caller is known but its role lacks the permission    → 403
    ├── RateLimited        the caller sent too many requests: retry after a while   → 429
    ├── PayloadTooLarge    the request body is larger than the API accepts          → 413
    └── MethodNotAllowed   the route exists, but not for this HTTP method           → 405

Every error's message is safe to show to the caller: it names the rule that failed, never a
secret, token or password. Statuses are assigned in one place, `serve_apps.http_errors`.
"""

from __future__ import annotations

from typing import Any

from storage.errors import RetryAfter, YmeraError


class Unauthenticated(YmeraError):
    code = "unauthenticated"


class Forbidden(YmeraError):
    code = "forbidden"


class RateLimited(RetryAfter, YmeraError):
    """Too many requests from one caller; `retry_after_s` says when the next one may succeed."""

    code = "rate_limited"


class PayloadTooLarge(YmeraError):
    code = "payload_too_large"


class MethodNotAllowed(YmeraError):
    """The path names a route that does not take this method; `allowed` lists the methods it
    does take, as the `Allow` header spells them (for example "GET, POST")."""

    code = "method_not_allowed"

    def __init__(
        self, message: str, details: dict[str, Any] | None = None, allowed: str = ""
    ) -> None:
        super().__init__(message, details)
        self.args = (message, details, allowed)
        self.allowed = allowed
