"""The vocabulary of the language-model layer: messages, usage, completions, errors, the provider protocol.

Every provider client speaks these types and nothing else, so the gateway (retries, fallback, budgets,
breakers) never sees an SDK object or an SDK exception. Values are frozen dataclasses; errors pickle
across actors (all constructor arguments reach `Exception.args`) and never carry an API key.

    YmeraError (storage.errors)
    └── LlmError                  a model call failed                        retryable
        ├── RateLimited           429; `retry_after_s` from Retry-After      yes
        ├── ProviderUnavailable   5xx, connection refused or reset, garbage  yes
        ├── ProviderTimeout       no answer within the timeout               yes
        ├── BadModelRequest       4xx other than 429 (auth, bad model, ...)  no
        ├── StreamBroken          the stream failed after its first chunk    no
        └── BudgetExceeded        the tenant's token budget cannot cover it  no

    InvalidRequest (storage.errors)
    └── LlmConfigError            a deployment is misconfigured or its key cannot be read
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from storage.errors import InvalidRequest, YmeraError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    """One turn of a chat: `role` is "system", "user" or "assistant"."""

    role: str
    content: str


@dataclass(frozen=True)
class Usage:
    """Tokens a provider reports for one call."""

    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Completion:
    """A finished answer. `usage` is None when the provider did not report it; `model` is the
    provider's model id, `deployment` the configured deployment that answered."""

    text: str
    usage: Usage | None
    model: str
    deployment: str
    finish_reason: str | None


class LlmError(YmeraError):
    """A model call failed. `retryable` says whether another attempt (here or on a fallback) may
    succeed; `retry_after_s` is the provider's hint when it gave one."""

    code = "llm_error"
    retryable = False

    def __init__(
        self, message: str, deployment: str | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, {"deployment": deployment} if deployment else None)
        self.args = (message, deployment, retry_after_s)
        self.deployment = deployment
        self.retry_after_s = retry_after_s


class RateLimited(LlmError):
    code = "rate_limited"
    retryable = True


class ProviderUnavailable(LlmError):
    code = "provider_unavailable"
    retryable = True


class ProviderTimeout(LlmError):
    code = "provider_timeout"
    retryable = True


class BadModelRequest(LlmError):
    code = "bad_model_request"
    retryable = False


class StreamBroken(LlmError):
    code = "stream_broken"
    retryable = False


class BudgetExceeded(LlmError):
    code = "budget_exceeded"
    retryable = False


class LlmConfigError(InvalidRequest):
    """The model configuration is wrong; the message names the deployment and the field (or the
    environment variable / file of its key), never the key itself."""

    code = "llm_config_error"


class Provider(Protocol):
    """A client of one deployment. Raises only `LlmError`s.

    `stream` yields text chunks and finally exactly one `Completion` (the whole text and the usage).
    A failure before the first chunk raises the classified error (so the caller may fail over);
    after it, `StreamBroken`.
    """

    async def complete(
        self, messages: Sequence[Message], *, max_tokens: int, temperature: float, timeout_s: float
    ) -> Completion: ...

    def stream(
        self, messages: Sequence[Message], *, max_tokens: int, temperature: float, timeout_s: float
    ) -> AsyncIterator[str | Completion]: ...
