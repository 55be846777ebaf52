"""One model call over a model group's deployments in their configured order: retries on each,
failing over to the next, and circuit breakers that skip the deployments known to be down.

`call_with_fallback` answers with the first `Completion` any deployment gives. For each
deployment in order: a deployment whose breaker refuses is skipped; otherwise it is tried up to
the retry policy's attempts, each attempt admitted by its breaker and reported to it. A
retryable error (429, 5xx, timeout) moves on to the next deployment once the retries are used
up; an error that is not retryable (a bad request) is the request's fault: it is raised at once,
and counts as an answer for the breaker.

`stream_with_fallback` does the same for a streamed answer, and guarantees:
- before the first chunk of text, a failure fails over exactly like `call_with_fallback`;
- after it, nothing is retried or failed over (the client has seen part of an answer): the
  stream ends with one `StreamBroken` item naming the deployment, and no `Completion`;
- a stream that completes ends with exactly one `Completion`; one that stops without it
  counts as broken. No stream ever ends silently truncated.

When no deployment answers, `NoDeploymentAnswered` names every deployment and why each one
failed or was skipped (error codes and provider messages, which never carry keys).

A call cancelled while a probe is out gives the probe's slot back (`CircuitBreaker.abandon`);
a stream the client leaves after its first chunk counts as a success for the breaker (the
deployment was answering). A breaker store that fails raises its `StorageError` to the caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ml.llm.resilience import Admission, CircuitBreaker, RetryPolicy
from ml.llm.types import (
    Completion, LlmError, Message, Provider, ProviderUnavailable, StreamBroken,
)
from storage.errors import InvalidRequest

Sleep = Callable[[float], Awaitable[None]]
StreamItem = str | Completion | StreamBroken


@dataclass(frozen=True)
class ChatRequest:
    """What one model call asks: the same for every deployment it may go to."""

    messages: tuple[Message, ...]
    max_tokens: int
    temperature: float = 0.0
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.messages:
            raise InvalidRequest("a model call needs at least one message")
        if self.max_tokens < 1:
            raise InvalidRequest(f"max_tokens must be at least 1, not {self.max_tokens}",
                                 {"max_tokens": self.max_tokens})
        if not self.timeout_s > 0:
            raise InvalidRequest(f"timeout_s must be positive, not {self.timeout_s}",
                                 {"timeout_s": self.timeout_s})


@dataclass(frozen=True)
class DeploymentFailure:
    """Why one deployment gave no answer: an error `code` ("circuit_open" when skipped), the
    `reason`, and how many calls were made to it."""

    deployment: str
    code: str
    reason: str
    attempts: int

    def __str__(self) -> str:
        tries = f" after {self.attempts} attempt(s)" if self.attempts else ""
        return f"{self.deployment}: {self.code}{tries} ({self.reason})"


class NoDeploymentAnswered(ProviderUnavailable):
    """No deployment of the group answered; `failures` says why, deployment by deployment.
    `retry_after_s` is the soonest any of them asked to be tried again, when one did."""

    code = "no_deployment_answered"

    def __init__(self, message: str, failures: Sequence[DeploymentFailure] = (),
                 retry_after_s: float | None = None) -> None:
        super().__init__(message, None, retry_after_s)
        self.args = (message, tuple(failures), retry_after_s)
        self.failures = tuple(failures)
        self.details = {"failures": [asdict(failure) for failure in self.failures]}


class _Failover:
    """The failures so far of one call, and the final error once every deployment failed."""

    def __init__(self, deployments: Sequence[str], providers: Mapping[str, Provider]) -> None:
        if not deployments:
            raise InvalidRequest("a model call needs at least one deployment")
        unknown = [name for name in deployments if name not in providers]
        if unknown:
            raise InvalidRequest(f"no provider for deployment(s) {', '.join(unknown)}",
                                 {"deployments": unknown})
        self.failures: list[DeploymentFailure] = []
        self.retry_after: list[float] = []

    def skipped(self, admission: Admission, attempts: int) -> None:
        self.failures.append(DeploymentFailure(admission.deployment, "circuit_open",
                                               admission.why, attempts))

    def failed(self, deployment: str, error: LlmError, attempts: int) -> None:
        self.failures.append(DeploymentFailure(deployment, error.code, error.message, attempts))
        if error.retry_after_s is not None:
            self.retry_after.append(error.retry_after_s)

    def error(self) -> NoDeploymentAnswered:
        tried = "; ".join(str(failure) for failure in self.failures)
        return NoDeploymentAnswered(f"no deployment answered: {tried}", self.failures,
                                    min(self.retry_after, default=None))


async def _failed_attempt(breaker: CircuitBreaker, retry: RetryPolicy, admission: Admission,
                          attempt: int, error: LlmError, sleep: Sleep) -> bool:
    """Report a failed attempt; whether to try the same deployment again (after waiting).
    An error that is not retryable is raised: the deployment answered, the request is wrong."""
    if not error.retryable:
        await breaker.record_success(admission)
        raise error
    await breaker.record_failure(admission)
    delay = retry.delay_before_retry(attempt, error)
    if delay is None:
        return False
    await sleep(delay)
    return True


async def call_with_fallback(
    deployments: Sequence[str], providers: Mapping[str, Provider], breaker: CircuitBreaker,
    retry: RetryPolicy, request: ChatRequest, *, sleep: Sleep = asyncio.sleep,
) -> Completion:
    """The first answer of `deployments`, in order (see the module's docstring). Raises the
    first error that is not retryable, or `NoDeploymentAnswered`."""
    failover = _Failover(deployments, providers)
    for deployment in deployments:
        attempt = 0
        while True:
            admission = await breaker.admit(deployment)
            if not admission.allowed:
                failover.skipped(admission, attempt)
                break
            attempt += 1
            try:
                completion = await providers[deployment].complete(
                    request.messages, max_tokens=request.max_tokens,
                    temperature=request.temperature, timeout_s=request.timeout_s)
            except LlmError as error:
                if not await _failed_attempt(breaker, retry, admission, attempt, error, sleep):
                    failover.failed(deployment, error, attempt)
                    break
                continue
            except BaseException:  # cancelled (or a provider's bug): no outcome to report
                await breaker.abandon(admission)
                raise
            await breaker.record_success(admission)
            return completion
    raise failover.error()


async def _aclose(stream: AsyncIterator[Any]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


async def stream_with_fallback(
    deployments: Sequence[str], providers: Mapping[str, Provider], breaker: CircuitBreaker,
    retry: RetryPolicy, request: ChatRequest, *, sleep: Sleep = asyncio.sleep,
) -> AsyncIterator[StreamItem]:
    """Text chunks of the first deployment that starts answering, then its `Completion`, or a
    final `StreamBroken` item when it fails mid-answer (see the module's docstring). Raises
    before the first item: the first error that is not retryable, or `NoDeploymentAnswered`."""
    failover = _Failover(deployments, providers)
    for deployment in deployments:
        attempt = 0
        while True:
            admission = await breaker.admit(deployment)
            if not admission.allowed:
                failover.skipped(admission, attempt)
                break
            attempt += 1
            chunks = 0
            stream = providers[deployment].stream(
                request.messages, max_tokens=request.max_tokens,
                temperature=request.temperature, timeout_s=request.timeout_s)
            try:
                async for item in stream:
                    if isinstance(item, Completion):
                        await breaker.record_success(admission)
                        yield item
                        return
                    if item:
                        chunks += 1
                        yield item
                raise (StreamBroken if chunks else ProviderUnavailable)(
                    "the stream ended without its completion", deployment)
            except LlmError as error:
                if chunks:
                    await breaker.record_failure(admission)
                    yield _broken(deployment, chunks, error)
                    return
                if not await _failed_attempt(breaker, retry, admission, attempt, error, sleep):
                    failover.failed(deployment, error, attempt)
                    break
            except BaseException:  # the client left, or the call was cancelled
                if chunks:
                    await breaker.record_success(admission)
                else:
                    await breaker.abandon(admission)
                raise
            finally:
                await _aclose(stream)
    raise failover.error()


def _broken(deployment: str, chunks: int, error: LlmError) -> StreamBroken:
    if isinstance(error, StreamBroken):
        return error
    return StreamBroken(f"the answer broke off after {chunks} chunk(s): {error.message}",
                        deployment)
