"""Fallback over a model group's deployments: order, retries, breakers, and streams that fail
over before their first chunk and end with an explicit error after it."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from ml.llm.fallback import (
    ChatRequest, NoDeploymentAnswered, StreamItem, call_with_fallback, stream_with_fallback,
)
from ml.llm.resilience import (
    CLOSED, OPEN, BreakerPolicy, CircuitBreaker, InMemoryBreakerStore, RetryPolicy,
)
from ml.llm.types import (
    BadModelRequest, Completion, LlmError, Message, ProviderTimeout, ProviderUnavailable,
    RateLimited, StreamBroken, Usage,
)
from storage.errors import InvalidRequest

REQUEST = ChatRequest((Message("user", "Translate 'good morning' into French."),),
                      max_tokens=32)
RETRY = RetryPolicy(attempts=3, base_delay_s=0.5, max_delay_s=4.0, max_retry_after_s=10.0)


@dataclass
class Script:
    """One scripted answer: an error raised at once, or chunks then (unless `error` or
    `unfinished`) the completion; `error` is raised after the chunks."""

    chunks: Sequence[str] = ("Bon", "jour")
    error: LlmError | None = None
    unfinished: bool = False


@dataclass
class FakeProvider:
    """A provider of one deployment that plays its script, one entry per call (the last entry
    repeats), and logs every call in a log shared by the deployments of a test."""

    name: str
    script: list[Script]
    log: list[str]
    closed_streams: int = 0
    calls: int = field(default=0)

    def _next(self) -> Script:
        self.log.append(self.name)
        self.calls += 1
        return self.script[min(self.calls, len(self.script)) - 1]

    def _completion(self, text: str) -> Completion:
        return Completion(text, Usage(12, 2), f"model-of-{self.name}", self.name, "stop")

    async def complete(self, messages: Sequence[Message], *, max_tokens: int,
                       temperature: float, timeout_s: float) -> Completion:
        step = self._next()
        if step.error is not None:
            raise step.error
        return self._completion("".join(step.chunks))

    async def stream(self, messages: Sequence[Message], *, max_tokens: int, temperature: float,
                     timeout_s: float) -> AsyncIterator[str | Completion]:
        step = self._next()
        try:
            for chunk in step.chunks:
                yield chunk
            if step.error is not None:
                raise step.error
            if not step.unfinished:
                yield self._completion("".join(step.chunks))
        finally:
            self.closed_streams += 1


class Group:
    """The deployments of one model group, their breaker and the delays slept."""

    def __init__(self, **scripts: list[Script]) -> None:
        self.log: list[str] = []
        self.providers = {name: FakeProvider(name, script, self.log)
                          for name, script in scripts.items()}
        self.order = list(scripts)
        self.now = 1_800_000_000.0
        self.breaker = CircuitBreaker(
            InMemoryBreakerStore(), BreakerPolicy(failure_threshold=3, cooldown_s=30),
            clock=lambda: self.now)
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    async def call(self) -> Completion:
        return await call_with_fallback(self.order, self.providers, self.breaker, RETRY,
                                        REQUEST, sleep=self.sleep)

    async def stream(self) -> list[StreamItem]:
        return [item async for item in stream_with_fallback(
            self.order, self.providers, self.breaker, RETRY, REQUEST, sleep=self.sleep)]

    async def state(self, deployment: str) -> str:
        return (await self.breaker.record(deployment)).state


def down() -> Script:
    return Script(chunks=(), error=ProviderUnavailable("502 Bad Gateway", None))


OK = Script()


async def test_the_first_deployment_answers_when_it_can() -> None:
    group = Group(primary=[OK], secondary=[OK])

    completion = await group.call()

    assert (completion.deployment, completion.text, group.log) == ("primary", "Bonjour",
                                                                   ["primary"])


async def test_fails_over_in_order_after_the_retries_of_each_deployment() -> None:
    group = Group(primary=[down()], secondary=[down()], tertiary=[OK])

    completion = await group.call()

    assert completion.deployment == "tertiary"
    assert group.log == ["primary"] * 3 + ["secondary"] * 3 + ["tertiary"]
    assert len(group.slept) == 4 and all(0 <= s <= 2.0 for s in group.slept)


async def test_a_transient_error_is_retried_on_the_same_deployment_after_retry_after() -> None:
    group = Group(primary=[Script(error=RateLimited("429", None, retry_after_s=2.5)), OK],
                  secondary=[OK])

    completion = await group.call()

    assert (completion.deployment, group.log, group.slept) == (
        "primary", ["primary", "primary"], [2.5])


async def test_a_retry_after_too_long_to_wait_fails_over_at_once() -> None:
    group = Group(primary=[Script(error=RateLimited("429", None, retry_after_s=60))],
                  secondary=[OK])

    completion = await group.call()

    assert (completion.deployment, group.log, group.slept) == (
        "secondary", ["primary", "secondary"], [])


async def test_a_bad_request_is_raised_at_once_and_does_not_trip_the_breaker() -> None:
    group = Group(primary=[Script(error=BadModelRequest("400: max_tokens too large", None))],
                  secondary=[OK])

    for _ in range(4):
        with pytest.raises(BadModelRequest, match="max_tokens too large"):
            await group.call()

    assert group.log == ["primary"] * 4
    assert await group.state("primary") == CLOSED


async def test_an_open_breaker_skips_its_deployment_until_the_probe_heals_it() -> None:
    group = Group(primary=[down(), down(), down(), OK], secondary=[OK])
    assert (await group.call()).deployment == "secondary"  # three failures opened primary
    assert await group.state("primary") == OPEN
    group.log.clear()

    assert (await group.call()).deployment == "secondary"
    assert group.log == ["secondary"]

    group.now += 31
    assert (await group.call()).deployment == "primary"  # the probe
    assert await group.state("primary") == CLOSED


async def test_when_nothing_answers_the_error_names_every_deployment_and_why() -> None:
    group = Group(primary=[down()], secondary=[Script(error=ProviderTimeout("no answer in 60 s",
                                                                            None))],
                  tertiary=[Script(error=RateLimited("429 slow down", None, retry_after_s=20))])
    with pytest.raises(NoDeploymentAnswered) as first:
        await group.call()
    with pytest.raises(NoDeploymentAnswered) as second:  # primary and secondary are open now
        await group.call()

    message = str(first.value)
    assert "primary: provider_unavailable after 3 attempt(s) (502 Bad Gateway)" in message
    assert "secondary: provider_timeout after 3 attempt(s) (no answer in 60 s)" in message
    assert "tertiary: rate_limited after 1 attempt(s) (429 slow down)" in message
    assert first.value.retry_after_s == 20
    assert first.value.retryable
    assert [f.code for f in second.value.failures] == [
        "circuit_open", "circuit_open", "rate_limited"]
    copied = pickle.loads(pickle.dumps(first.value))
    assert (str(copied), copied.failures) == (message, first.value.failures)
    assert copied.details["failures"][0]["deployment"] == "primary"


async def test_a_stream_fails_over_before_its_first_chunk() -> None:
    group = Group(primary=[down()], secondary=[Script(chunks=("Bon", "", "jour"))])

    items = await group.stream()

    assert items[:2] == ["Bon", "jour"]
    assert isinstance(items[2], Completion) and items[2].deployment == "secondary"
    assert len(items) == 3
    assert group.log == ["primary"] * 3 + ["secondary"]
    assert group.providers["primary"].closed_streams == 3


async def test_a_stream_broken_mid_answer_ends_with_an_explicit_error_item() -> None:
    cut = Script(chunks=("Bon",), error=ProviderUnavailable("connection reset", None))
    group = Group(primary=[cut], secondary=[OK])

    items = await group.stream()

    assert items[0] == "Bon"
    assert isinstance(items[1], StreamBroken) and len(items) == 2
    assert items[1].deployment == "primary"
    assert "broke off after 1 chunk(s): connection reset" in items[1].message
    assert group.log == ["primary"]  # never restarted elsewhere: the client saw "Bon"
    assert (await group.breaker.record("primary")).failures == 1


async def test_a_stream_that_stops_without_its_completion_is_broken_not_truncated() -> None:
    group = Group(primary=[Script(chunks=("Bon",), unfinished=True)], secondary=[OK])

    items = await group.stream()

    assert items[0] == "Bon" and isinstance(items[1], StreamBroken) and len(items) == 2
    assert "ended without its completion" in items[1].message


async def test_a_stream_with_no_deployment_answering_raises_before_any_item() -> None:
    group = Group(primary=[Script(chunks=(), unfinished=True)], secondary=[down()])

    with pytest.raises(NoDeploymentAnswered, match="primary: provider_unavailable"):
        await group.stream()


async def test_a_client_leaving_mid_stream_closes_the_providers_stream() -> None:
    group = Group(primary=[Script(chunks=("a", "b", "c"))])
    stream = stream_with_fallback(group.order, group.providers, group.breaker, RETRY, REQUEST)

    assert await anext(stream) == "a"
    await stream.aclose()

    assert group.providers["primary"].closed_streams == 1


async def test_bad_calls_are_refused_clearly() -> None:
    group = Group(primary=[OK])
    with pytest.raises(InvalidRequest, match="no provider for deployment"):
        await call_with_fallback(["primary", "missing"], group.providers, group.breaker, RETRY,
                                 REQUEST)
    with pytest.raises(InvalidRequest, match="at least one deployment"):
        await call_with_fallback([], group.providers, group.breaker, RETRY, REQUEST)
    with pytest.raises(InvalidRequest, match="max_tokens must be at least 1"):
        ChatRequest(REQUEST.messages, max_tokens=0)


class Hanging(FakeProvider):
    """A deployment that never answers (until the caller gives up)."""

    async def complete(self, messages: Sequence[Message], *, max_tokens: int,
                       temperature: float, timeout_s: float) -> Completion:
        self.log.append(self.name)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def _open_then_cool(group: Group, deployment: str) -> None:
    for _ in range(3):
        await group.breaker.record_failure(await group.breaker.admit(deployment))
    group.now += 31


async def test_a_cancelled_probe_call_lets_the_next_call_probe() -> None:
    group = Group(primary=[OK])
    group.providers["primary"] = Hanging("primary", [OK], group.log)
    await _open_then_cool(group, "primary")
    call = asyncio.create_task(group.call())
    while not group.log:
        await asyncio.sleep(0)

    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    assert (await group.breaker.admit("primary")).probe


async def test_a_client_leaving_a_probing_stream_after_its_first_chunk_closes_the_breaker(
) -> None:
    group = Group(primary=[Script(chunks=("a", "b"))])
    await _open_then_cool(group, "primary")
    stream = stream_with_fallback(group.order, group.providers, group.breaker, RETRY, REQUEST)

    assert await anext(stream) == "a"
    await stream.aclose()

    assert await group.state("primary") == CLOSED
