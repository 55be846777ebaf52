"""The platform's error root and the storage layer's errors.

Every error the platform raises on purpose derives from `YmeraError`, carries a stable `code`, and
pickles across actors (all constructor arguments reach `Exception.__init__`). Each package adds its
own branch in its own `errors.py`; `serve_apps` maps codes to HTTP statuses in one place.

    YmeraError
    ├── InvalidRequest            bad input; nothing was changed            (storage)
    ├── NotFound                  no such task / agent type                 (storage)
    ├── Conflict                  the operation does not fit the state      (storage)
    ├── StorageError              the database failed or is unreachable     (storage)
    │   └── SchemaOutOfDate       migrations have not been applied
    ├── AgentError                raised by agents                          (actors.errors)
    │   ├── RetryableAgentError   transient trouble; worth another attempt
    │   └── InvalidTaskInput      the task itself is wrong; never retried
    ├── QueueFull                 back-pressure: try again later            (actors.errors)
    ├── PlatformUnavailable       the orchestrator cannot be reached        (actors.errors)
    ├── NoConfidentRoute          nobody should take this task              (ml.errors)
    └── EmbeddingModelUnavailable the bundled embedding model cannot load   (ml.errors)

`RetryAfter` is a mixin, not a branch: the errors that pass with time (`QueueFull`,
`RateLimited`) carry a `retry_after_s` through it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any


class YmeraError(Exception):
    """Base of every error the platform raises on purpose."""

    code = "error"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details)
        self.message = message
        self.details = details or {}

    def __str__(self) -> str:
        return self.message


if TYPE_CHECKING:
    # What a `RetryAfter` is always mixed into, so its `super().__init__` call can be checked.
    _RetryAfterBase = YmeraError
else:
    _RetryAfterBase = object


class RetryAfter(_RetryAfterBase):
    """Mixin of the platform errors that pass with time (back-pressure, rate limits), before
    `YmeraError` in their bases: `retry_after_s` says when the next try may succeed."""

    def __init__(
        self, message: str, details: dict[str, Any] | None = None, retry_after_s: float = 1.0
    ) -> None:
        super().__init__(message, details)
        self.args = (message, details, retry_after_s)
        self.retry_after_s = retry_after_s


class InvalidRequest(YmeraError):
    code = "invalid_request"


class NotFound(YmeraError):
    code = "not_found"


class Conflict(YmeraError):
    code = "conflict"


class StorageError(YmeraError):
    code = "storage_error"


class SchemaOutOfDate(StorageError):
    code = "schema_out_of_date"
