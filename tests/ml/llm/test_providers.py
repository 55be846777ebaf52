"""Both provider clients against both fake providers over real HTTP: answers, usage, streams, and
every fault mapped to the error the gateway acts on, with the key in no error and no log line.

Malformed JSON is `ProviderUnavailable` (retryable): the provider is broken, another deployment may
answer properly; after the first streamed chunk it is `StreamBroken` like any other failure.
"""

from __future__ import annotations

import email.utils
import logging
import pickle
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ml.llm.config import Deployment, KeySource
from ml.llm.providers import (
    AnthropicProvider,
    OpenAIProvider,
    make_provider,
    retry_after_s,
    set_prompt_logging,
)
from ml.llm.types import (
    BadModelRequest,
    Completion,
    LlmConfigError,
    LlmError,
    Message,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    StreamBroken,
    Usage,
)
from tests.support.fake_llm import FakeAnthropic, FakeLlmServer, FakeOpenAI, Fault, Reply

API_KEY = "sk-test-7Hq2ZpX9vLr4Kd0sWm5N"
KEY_ENV = "YMERA_TEST_LLM_KEY"
ASK = [Message("system", "Be brief."), Message("user", "Say hello.")]
FIVE_WORDS = Reply("the quick brown fox jumps", usage=(11, 5))
SDK_LOGGERS = ("", "openai", "anthropic", "httpx", "httpx2", "httpcore", "httpcore2", "aiohttp")


@pytest.fixture(params=["openai", "anthropic"])
async def fake(request: pytest.FixtureRequest,
               monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeLlmServer]:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    server_cls = FakeOpenAI if request.param == "openai" else FakeAnthropic
    async with server_cls() as server:
        yield server


def deployment_for(server: FakeLlmServer, **fields: Any) -> Deployment:
    kind = "anthropic" if isinstance(server, FakeAnthropic) else "openai"
    values: dict[str, Any] = dict(
        name=f"{kind}-fake", group="chat", provider=kind, base_url=server.base_url,
        model=f"{kind}-model-1", key_source=KeySource(env=KEY_ENV), timeout_s=5.0)
    return Deployment(**{**values, **fields})


@pytest.fixture
async def provider(fake: FakeLlmServer) -> AsyncIterator[OpenAIProvider | AnthropicProvider]:
    client = make_provider(deployment_for(fake))
    assert isinstance(client, (OpenAIProvider, AnthropicProvider))
    yield client
    await client.aclose()


def key_sent(headers: dict[str, str]) -> bool:
    """The key went out as a header (Anthropic's SDK uses x-api-key or a bearer token by version)."""
    return headers.get("x-api-key") == API_KEY or headers.get("authorization") == f"Bearer {API_KEY}"


async def complete(provider: Any, timeout_s: float = 5.0) -> Completion:
    result: Completion = await provider.complete(ASK, max_tokens=64, temperature=0.2,
                                                 timeout_s=timeout_s)
    return result


async def stream(provider: Any, timeout_s: float = 5.0,
                 received: list[str] | None = None) -> tuple[list[str], Completion]:
    chunks = [] if received is None else received
    final: list[Completion] = []
    async for item in provider.stream(ASK, max_tokens=64, temperature=0.2, timeout_s=timeout_s):
        if isinstance(item, Completion):
            final.append(item)
        else:
            assert not final, "a chunk came after the final Completion"
            chunks.append(item)
    assert len(final) == 1
    return chunks, final[0]


async def test_a_completion_carries_text_usage_model_and_deployment(fake, provider):
    fake.script([Reply("Hello there.", usage=(7, 3))])
    answer = await complete(provider)
    assert answer == Completion(text="Hello there.", usage=Usage(7, 3), model=provider.deployment.model,
                                deployment=provider.deployment.name, finish_reason="stop")
    sent = fake.requests[-1]
    assert sent.body["model"] == provider.deployment.model
    assert sent.body["max_tokens"] == 64 and sent.body["temperature"] == 0.2
    assert key_sent(sent.headers)
    if isinstance(fake, FakeAnthropic):
        assert sent.body["system"] == "Be brief."
        assert sent.body["messages"] == [{"role": "user", "content": "Say hello."}]
    else:
        assert [m["role"] for m in sent.body["messages"]] == ["system", "user"]


async def test_a_stream_yields_the_chunks_then_one_completion_with_usage(fake, provider):
    fake.script([FIVE_WORDS])
    chunks, final = await stream(provider)
    assert chunks == ["the ", "quick ", "brown ", "fox ", "jumps"]
    assert final.text == "the quick brown fox jumps"
    assert final.usage == Usage(11, 5) and final.finish_reason == "stop"
    assert final.deployment == provider.deployment.name
    if isinstance(fake, FakeOpenAI):
        assert fake.requests[-1].body["stream_options"] == {"include_usage": True}


async def test_missing_usage_gives_none_not_an_error(fake, provider):
    fake.script([Fault.usage_missing("no usage"), Fault.usage_missing("no usage either")])
    assert (await complete(provider)).usage is None
    chunks, final = await stream(provider)
    assert final.usage is None and final.text == "no usage either" == "".join(chunks)


async def test_a_length_cut_answer_says_so(fake, provider):
    fake.script([Reply("trunc", finish_reason="length")])
    assert (await complete(provider)).finish_reason == "length"


@pytest.mark.parametrize("streaming", [False, True])
async def test_429_is_rate_limited_with_the_retry_after_seconds(fake, provider, streaming):
    fake.script([Fault.status(429, retry_after=7)])
    with pytest.raises(RateLimited) as caught:
        await (stream(provider) if streaming else complete(provider))
    assert caught.value.retry_after_s == 7.0 and caught.value.retryable
    assert caught.value.deployment == provider.deployment.name


@pytest.mark.parametrize("status", [500, 502, 503, 529])
async def test_5xx_is_provider_unavailable(fake, provider, status):
    fake.script([Fault.status(status, retry_after=3)])
    with pytest.raises(ProviderUnavailable) as caught:
        await complete(provider)
    assert caught.value.retryable and caught.value.retry_after_s == 3.0
    assert f"HTTP {status}" in str(caught.value)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_other_4xx_is_a_bad_request_never_retried(fake, provider, status):
    fake.script([Fault.status(status, message="model not found: nope")])
    with pytest.raises(BadModelRequest) as caught:
        await complete(provider)
    assert not caught.value.retryable
    assert "model not found: nope" in str(caught.value)


async def test_408_is_a_timeout(fake, provider):
    fake.script([Fault.status(408)])
    with pytest.raises(ProviderTimeout):
        await complete(provider)


@pytest.mark.parametrize("streaming", [False, True])
async def test_a_slow_provider_times_out_on_time(fake, provider, streaming):
    fake.script([Fault.slow(3.0)])
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as caught:
        await (stream(provider, timeout_s=0.3) if streaming else complete(provider, timeout_s=0.3))
    assert time.monotonic() - started < 2.0
    assert caught.value.retryable


async def test_a_slow_but_timely_provider_answers(fake, provider):
    fake.script([Fault.slow(0.2, Reply("late but fine"))])
    assert (await complete(provider, timeout_s=3.0)).text == "late but fine"


async def test_a_dropped_connection_is_provider_unavailable(fake, provider):
    fake.script([Fault.drop(), Fault.cut_after(1)])
    with pytest.raises(ProviderUnavailable):
        await complete(provider)
    with pytest.raises(ProviderUnavailable):  # half a JSON body, then the connection closes
        await complete(provider)


async def test_a_stream_cut_after_chunks_is_stream_broken(fake, provider):
    fake.script([Fault.cut_after(2, FIVE_WORDS)])
    received: list[str] = []
    with pytest.raises(StreamBroken) as caught:
        await stream(provider, received=received)
    assert received == ["the ", "quick "]
    assert not caught.value.retryable and caught.value.deployment == provider.deployment.name
    assert "after 2 chunks" in str(caught.value)


@pytest.mark.parametrize("fault", [Fault.cut_after(0), Fault.status(500), Fault.drop(),
                                   Fault.end_early(0)],
                         ids=["cut", "500", "drop", "no-end-marker"])
async def test_a_stream_failing_before_its_first_chunk_raises_the_classified_error(fake, provider,
                                                                                   fault):
    fake.script([fault])
    received: list[str] = []
    with pytest.raises(ProviderUnavailable):
        await stream(provider, received=received)
    assert received == []


async def test_a_stream_ending_without_its_end_marker_is_never_a_silent_truncation(fake, provider):
    fake.script([Fault.end_early(3, FIVE_WORDS)])
    received: list[str] = []
    with pytest.raises(StreamBroken):
        await stream(provider, received=received)
    assert received == ["the ", "quick ", "brown "]


async def test_an_in_band_stream_error_is_classified_or_breaks_the_stream(fake, provider):
    fake.script([Fault.error_event(after=0, kind="rate_limit_error"),
                 Fault.error_event(after=0, kind="overloaded_error"),
                 Fault.error_event(after=2)])
    with pytest.raises(RateLimited):
        await stream(provider)
    with pytest.raises(ProviderUnavailable):
        await stream(provider)
    with pytest.raises(StreamBroken):
        await stream(provider)


async def test_malformed_json_is_provider_unavailable_or_a_broken_stream(fake, provider):
    fake.script([Fault.malformed(), Fault.malformed(after=0), Fault.malformed(after=2)])
    with pytest.raises(ProviderUnavailable, match="malformed"):
        await complete(provider)
    with pytest.raises(ProviderUnavailable, match="malformed"):
        await stream(provider)
    with pytest.raises(StreamBroken):
        await stream(provider)


async def test_a_stream_abandoned_by_its_reader_releases_the_connection(fake, provider):
    fake.script([FIVE_WORDS, Reply("next")])
    chunks = provider.stream(ASK, max_tokens=64, temperature=0.2, timeout_s=5.0)
    assert await chunks.__anext__() == "the "
    await chunks.aclose()
    assert (await complete(provider)).text == "next"


async def test_unknown_roles_and_empty_conversations_are_refused_before_any_request(fake, provider):
    with pytest.raises(BadModelRequest, match="role"):
        await provider.complete([Message("tool", "x")], max_tokens=8, temperature=0, timeout_s=1)
    with pytest.raises(BadModelRequest, match="no messages"):
        await provider.complete([], max_tokens=8, temperature=0, timeout_s=1)
    assert fake.requests == []


async def test_an_openai_compatible_server_without_a_key_gets_no_real_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)  # must not be picked up implicitly
    async with FakeOpenAI() as server:
        client = make_provider(deployment_for(server, key_source=None))
        assert (await complete(client)).text == "ok"
        await client.aclose()
    assert API_KEY not in server.requests[-1].headers.get("authorization", "")


async def test_a_missing_key_variable_is_a_config_error_naming_it(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    async with FakeAnthropic() as server:
        with pytest.raises(LlmConfigError, match=f"anthropic-fake.*{KEY_ENV}"):
            make_provider(deployment_for(server))


def test_retry_after_reads_seconds_milliseconds_and_http_dates():
    now = time.time()
    assert retry_after_s({"retry-after": "2.5"}) == 2.5
    assert retry_after_s({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    date = email.utils.formatdate(now + 30, usegmt=True)
    from_date = retry_after_s({"retry-after": date}, now=now)
    assert from_date is not None and 28 <= from_date <= 30
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({}) is None
    assert retry_after_s({"retry-after": "-4"}) == 0.0


def test_errors_pickle_with_their_fields():
    error = pickle.loads(pickle.dumps(RateLimited("slow down", "gpt-a", 4.0)))
    assert (type(error), error.message, error.deployment, error.retry_after_s) == (
        RateLimited, "slow down", "gpt-a", 4.0)


async def test_the_key_reaches_no_error_and_no_log_line(fake, caplog):
    for name in SDK_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    client = make_provider(deployment_for(fake))
    fake.script([
        Fault.status(401, message=f"Incorrect API key provided: {API_KEY}"),
        Fault.status(429, retry_after=1, message=f"key {API_KEY} is over its quota"),
        Reply("fine"), FIVE_WORDS, Fault.cut_after(2), Fault.malformed(), Fault.drop(),
        Fault.error_event(after=1, message=f"stream failed for {API_KEY}"),
    ])
    errors: list[LlmError] = []
    for call in ("complete", "complete", "complete", "stream", "stream", "complete", "complete",
                 "stream"):
        try:
            await (complete(client) if call == "complete" else stream(client))
        except LlmError as exc:
            errors.append(exc)
            logging.getLogger("ymera.test").exception("call failed: %s", exc)
    await client.aclose()

    assert len(errors) == 6
    assert "[redacted]" in str(errors[0]) and "[redacted]" in str(errors[-1])
    for error in errors:
        assert API_KEY not in str(error) and API_KEY not in repr(error)
        assert API_KEY not in repr(pickle.loads(pickle.dumps(error)).__dict__)
    assert API_KEY not in repr(client)
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    lines = [formatter.format(record) for record in caplog.records]
    assert any(record.name.startswith(("openai", "anthropic")) for record in caplog.records), (
        "the SDK's debug logging was not captured, so this test proves nothing")
    assert not [line for line in lines if API_KEY in line]
    assert all(key_sent(request.headers) for request in fake.requests)


async def test_prompts_reach_the_debug_log_only_when_allowed(fake, provider, caplog):
    for name in SDK_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    prompt = [Message("user", "my secret prompt 4711")]
    await provider.complete(prompt, max_tokens=8, temperature=0, timeout_s=5)
    assert caplog.records and not [r for r in caplog.records if "4711" in r.getMessage()]
    set_prompt_logging(True)
    try:
        await provider.complete(prompt, max_tokens=8, temperature=0, timeout_s=5)
    finally:
        set_prompt_logging(False)
    if isinstance(fake, FakeAnthropic):  # this SDK logs request bodies at DEBUG (OpenAI's does not)
        assert [r for r in caplog.records if "4711" in r.getMessage()]
