"""The model gateway in-process, over real HTTP to the fake providers and real databases:
fallback order, Retry-After, breakers across a restart, the budget burst, caching per tenant,
streaming failover and the mid-stream error, missing usage, rate limits, and secrets and
prompts kept out of logs and errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ml.llm.config import LlmConfig
from ml.llm.fallback import NoDeploymentAnswered
from ml.llm.gateway import LlmGateway
from ml.llm.resilience import CLOSED, OPEN, BreakerPolicy, CircuitBreaker, RetryPolicy
from ml.llm.settings import LlmSettings
from ml.llm.types import BudgetExceeded, LlmError
from storage.database import migrate_async
from storage.errors import InvalidRequest
from storage.llm_breakers import SqlBreakerStore
from storage.llm_budget import LlmBudgetStore
from storage.llm_cache import LlmResponseCache
from tests.support.databases import DATABASE_KINDS, database_url_fixture
from tests.support.fake_llm import FakeAnthropic, FakeOpenAI, Fault, Reply

KEY = "sk-test-0123456789abcdefSECRET"
PROMPT = "Translate 'good morning' into French, privately."


class Recorder:
    """Metrics kept as a list of (event, args) for assertions."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.events.append((name, args))

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [args for event, args in self.events if event == name]


@pytest.fixture
async def openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def backup() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as server:
        yield server


@pytest.fixture
async def database_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    await migrate_async(url)
    return url


@pytest.fixture(params=DATABASE_KINDS, ids=DATABASE_KINDS)
def any_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from database_url_fixture(request.param, tmp_path)


def deployment(name: str, group: str, server: FakeOpenAI | FakeAnthropic,
               **extra: Any) -> dict[str, Any]:
    provider = "anthropic" if isinstance(server, FakeAnthropic) else "openai"
    entry = {"name": name, "group": group, "provider": provider, "base_url": server.base_url,
             "model": f"{name}-model", **extra}
    if provider == "anthropic" and "api_key_env" not in extra and "api_key_file" not in extra:
        entry["api_key_env"] = "YMERA_TEST_ANTHROPIC_KEY"
    return entry


def settings_for(deployments: list[dict[str, Any]], fallbacks: dict[str, list[str]] | None = None,
                 **options: Any) -> LlmSettings:
    config = LlmConfig.from_dict({"deployments": deployments,
                                  **({"fallbacks": fallbacks} if fallbacks else {})})
    options.setdefault("retry", RetryPolicy(attempts=1, base_delay_s=0.0, max_delay_s=0.0))
    options.setdefault("breaker", BreakerPolicy(failure_threshold=2, cooldown_s=30.0))
    return LlmSettings(config, **options)


def request(tenant: str = "acme", text: str = PROMPT, **fields: Any) -> dict[str, Any]:
    return {"tenant": tenant, "messages": [{"role": "user", "content": text}], **fields}


@contextlib.asynccontextmanager
async def gateway_over(settings: LlmSettings, database_url: str | None = None,
                       clock: list[float] | None = None, metrics: Recorder | None = None,
                       sleeps: list[float] | None = None) -> AsyncIterator[LlmGateway]:
    """A gateway with every store on `database_url` (none without it), closed afterwards."""
    budgets = await LlmBudgetStore.open(database_url) if database_url else None
    store = SqlBreakerStore(budgets.engine) if budgets else None
    from ml.llm.resilience import InMemoryBreakerStore

    breaker = CircuitBreaker(store or InMemoryBreakerStore(), settings.breaker,
                             **({"clock": lambda: clock[0]} if clock is not None else {}))

    async def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    gateway = LlmGateway.from_settings(
        settings, breaker, budgets, LlmResponseCache(budgets.engine) if budgets else None,
        metrics, environ={"YMERA_TEST_ANTHROPIC_KEY": KEY})
    gateway._sleep = sleep
    try:
        yield gateway
    finally:
        await gateway.aclose()
        if budgets is not None:
            await budgets.close()


async def test_fallback_follows_the_group_order_then_the_fallback_group(
    openai: FakeOpenAI, backup: FakeAnthropic,
) -> None:
    async with FakeOpenAI() as second:
        settings = settings_for(
            [deployment("first", "chat", openai), deployment("second", "chat", second),
             deployment("claude", "safe", backup)], fallbacks={"chat": ["safe"]})
        openai.script([Fault.status(500)])
        second.script([Fault.status(503)])
        backup.script([Reply("Bonjour", usage=(12, 3))])
        metrics = Recorder()
        async with gateway_over(settings, metrics=metrics) as gateway:
            answer = await gateway.complete(request())

    assert (answer["text"], answer["deployment"], answer["group"]) == ("Bonjour", "claude", "chat")
    assert answer["usage"] == {"input_tokens": 12, "output_tokens": 3}
    assert len(openai.requests) == len(second.requests) == len(backup.requests) == 1
    assert metrics.named("fell_back") == [("chat", "claude")]
    assert ("chat", "claude", "ok") == metrics.named("request_finished")[0][:3]


async def test_a_429_is_retried_after_its_retry_after(openai: FakeOpenAI) -> None:
    settings = settings_for([deployment("only", "chat", openai)],
                            retry=RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.01))
    openai.script([Fault.status(429, retry_after=2), Reply("Bonjour")])
    sleeps: list[float] = []
    async with gateway_over(settings, sleeps=sleeps) as gateway:
        answer = await gateway.complete(request())

    assert answer["text"] == "Bonjour" and answer["deployment"] == "only"
    assert sleeps and sleeps[0] >= 2.0
    assert len(openai.requests) == 2


async def test_an_open_breaker_survives_a_restart_and_a_probe_closes_it(
    openai: FakeOpenAI, backup: FakeAnthropic, database_url: str,
) -> None:
    settings = settings_for([deployment("primary", "chat", openai),
                             deployment("claude", "chat", backup)])
    clock = [1000.0]
    openai.script([Fault.status(500), Fault.status(500)])
    async with gateway_over(settings, database_url, clock) as gateway:
        for _ in range(2):
            assert (await gateway.complete(request()))["deployment"] == "claude"
        assert (await gateway.breaker.record("primary")).state == OPEN

    async with gateway_over(settings, database_url, clock) as restarted:  # a new process
        assert (await restarted.complete(request()))["deployment"] == "claude"
        assert len(openai.requests) == 2  # skipped: its breaker is still open
        clock[0] += 31.0  # the cool-down is over: the next call is the probe
        openai.script([Reply("Bonjour")])
        assert (await restarted.complete(request()))["deployment"] == "primary"
        assert (await restarted.breaker.record("primary")).state == CLOSED


async def test_a_burst_of_50_against_a_budget_for_10_never_overspends(
    openai: FakeOpenAI, any_database_url: str,
) -> None:
    await migrate_async(any_database_url)
    openai.default = Reply("done", usage=(10, 90))  # exactly the estimate: 40 chars, 90 tokens
    settings = settings_for([deployment("only", "chat", openai)])
    async with gateway_over(settings, any_database_url) as gateway:
        assert gateway.budgets is not None
        await gateway.budgets.set_limit("acme", 1000)

        async def call(index: int) -> dict[str, Any] | BudgetExceeded:
            try:
                return await gateway.complete(request(text="x" * 40, max_tokens=90,
                                                      task_id=f"task-{index}"))
            except BudgetExceeded as refused:
                return refused

        outcomes = await asyncio.gather(*(call(i) for i in range(50)))
        answered = [o for o in outcomes if isinstance(o, dict)]
        refused = [o for o in outcomes if isinstance(o, BudgetExceeded)]
        await gateway.flush()
        status = await gateway.budgets.status("acme")
        per_task = await gateway.budgets.task_usage("acme", _task_of(outcomes, answered[0]))
        totals = await gateway.budgets.tenant_usage("acme")

    assert len(answered) == 10 and len(refused) == 40
    assert len(openai.requests) == len(answered)
    assert status.used_tokens == 100 * len(answered) <= 1000 and status.reserved_tokens == 0
    assert refused[0].details["limit_tokens"] == 1000 and refused[0].details["estimate"] == 100
    assert (per_task.calls, per_task.input_tokens, per_task.output_tokens) == (1, 10, 90)
    assert totals.calls == len(answered)


def _task_of(outcomes: list[Any], answer: dict[str, Any]) -> str:
    return f"task-{outcomes.index(answer)}"


async def test_the_cache_answers_the_same_tenant_only(
    openai: FakeOpenAI, database_url: str,
) -> None:
    settings = settings_for([deployment("only", "chat", openai)])
    metrics = Recorder()
    async with gateway_over(settings, database_url, metrics=metrics) as gateway:
        first = await gateway.complete(request(cache_ttl_s=60))
        again = await gateway.complete(request(cache_ttl_s=60))
        other = await gateway.complete(request(tenant="globex", cache_ttl_s=60))
        await gateway.flush()
        assert gateway.budgets is not None
        acme = await gateway.budgets.tenant_usage("acme")

    assert (first["cached"], again["cached"], other["cached"]) == (False, True, False)
    assert again["text"] == first["text"] and again["cost_usd"] == 0.0
    assert len(openai.requests) == 2  # acme's second call never reached the model
    assert acme.calls == 1  # the cached answer cost acme nothing
    assert metrics.named("cache_lookup") == [("chat", False), ("chat", True), ("chat", False)]


async def test_a_stream_fails_over_before_its_first_token(
    openai: FakeOpenAI, backup: FakeAnthropic,
) -> None:
    settings = settings_for([deployment("primary", "chat", openai),
                             deployment("claude", "chat", backup)])
    openai.script([Fault.status(500)])
    backup.script([Reply("Bon jour", usage=(5, 2))])
    async with gateway_over(settings) as gateway:
        items = [item async for item in gateway.stream(request())]

    assert [item["delta"] for item in items[:-1]] == ["Bon ", "jour"]
    assert items[-1]["done"]["deployment"] == "claude"
    assert items[-1]["done"]["text"] == "Bon jour"


async def test_a_stream_broken_mid_answer_ends_with_an_error_item_and_is_charged(
    openai: FakeOpenAI, backup: FakeAnthropic, database_url: str,
) -> None:
    settings = settings_for([deployment("primary", "chat", openai),
                             deployment("claude", "chat", backup)])
    openai.script([Fault.cut_after(2, Reply("one two three four"))])
    async with gateway_over(settings, database_url) as gateway:
        items = [item async for item in gateway.stream(request(task_id="t-1"))]
        await gateway.flush()
        assert gateway.budgets is not None
        usage = await gateway.budgets.task_usage("acme", "t-1")
        status = await gateway.budgets.status("acme")

    assert [item.get("delta") for item in items[:-1]] == ["one ", "two "]
    assert items[-1]["error"]["code"] == "stream_broken"
    assert items[-1]["error"]["deployment"] == "primary"
    assert not any("done" in item for item in items)
    assert not backup.requests  # never failed over after the first token
    assert usage.calls == 1 and usage.output_tokens == 2  # 8 characters streamed
    assert status.reserved_tokens == 0


async def test_a_stream_left_after_its_first_token_is_charged_for_what_was_streamed(
    openai: FakeOpenAI, database_url: str,
) -> None:
    settings = settings_for([deployment("only", "chat", openai)])
    openai.script([Reply("abcdefgh " * 4)])
    async with gateway_over(settings, database_url) as gateway:
        assert gateway.budgets is not None
        await gateway.budgets.set_limit("acme", 100_000)
        stream = gateway.stream(request(task_id="t-2"))
        first = await anext(stream)
        await stream.aclose()
        await gateway.flush()
        usage = await gateway.budgets.task_usage("acme", "t-2")
        status = await gateway.budgets.status("acme")

    assert first == {"delta": "abcdefgh "}
    assert (usage.calls, usage.output_tokens) == (1, 3)  # 9 characters streamed
    assert status.reserved_tokens == 0 and status.used_tokens == usage.input_tokens + 3


async def test_a_tasks_usage_is_recorded_before_its_answer_returns(
    openai: FakeOpenAI, database_url: str,
) -> None:
    settings = settings_for([deployment("only", "chat", openai, input_price_per_mtok=2.0,
                                        output_price_per_mtok=4.0)])
    openai.script([Reply("Bonjour", usage=(500_000, 250_000))])
    async with gateway_over(settings, database_url) as gateway:
        answer = await gateway.complete(request(task_id="t-9"))
        assert gateway.budgets is not None
        usage = await gateway.budgets.task_usage("acme", "t-9")  # no flush: already written
        other = await gateway.budgets.task_usage("globex", "t-9")

    assert answer["cost_usd"] == pytest.approx(2.0)
    assert (usage.calls, usage.input_tokens, usage.output_tokens) == (1, 500_000, 250_000)
    assert usage.cost == pytest.approx(2.0)
    assert other.calls == 0  # another tenant's task of the same id sees nothing


async def test_missing_usage_is_estimated_and_charged(
    openai: FakeOpenAI, database_url: str,
) -> None:
    settings = settings_for([deployment("only", "chat", openai, input_price_per_mtok=1e6)])
    openai.script([Fault.usage_missing("x" * 20)])
    async with gateway_over(settings, database_url) as gateway:
        answer = await gateway.complete(request(text="y" * 40))
        await gateway.flush()
        assert gateway.budgets is not None
        status = await gateway.budgets.status("acme")

    assert answer["usage"] is None and answer["text"] == "x" * 20
    assert status.used_tokens == 10 + 5 and status.reserved_tokens == 0
    assert answer["cost_usd"] == pytest.approx(10.0)  # the 10 estimated input tokens


async def test_a_deployment_at_its_rate_limit_is_skipped(
    openai: FakeOpenAI, backup: FakeAnthropic,
) -> None:
    settings = settings_for([deployment("primary", "chat", openai, rpm=1),
                             deployment("claude", "chat", backup)])
    async with gateway_over(settings) as gateway:
        first = await gateway.complete(request())
        second = await gateway.complete(request())

    assert (first["deployment"], second["deployment"]) == ("primary", "claude")
    assert len(openai.requests) == 1


async def test_every_deployment_at_its_limit_is_refused_with_the_wait(openai: FakeOpenAI) -> None:
    settings = settings_for([deployment("only", "chat", openai, rpm=1)])
    async with gateway_over(settings) as gateway:
        await gateway.complete(request())
        with pytest.raises(LlmError) as refused:
            await gateway.complete(request())

    assert refused.value.code == "rate_limited" and refused.value.retry_after_s > 50


async def test_a_default_budget_is_given_but_never_overwrites_an_operators(
    openai: FakeOpenAI, database_url: str,
) -> None:
    settings = settings_for([deployment("only", "chat", openai)], default_budget_tokens=5000,
                            budget_period="day")
    async with gateway_over(settings, database_url) as gateway:
        assert gateway.budgets is not None
        await gateway.budgets.set_limit("globex", 99, "total")
        await gateway.complete(request(max_tokens=10))
        with pytest.raises(BudgetExceeded):
            await gateway.complete(request(tenant="globex", max_tokens=100))
        acme, globex = (await gateway.budgets.status("acme"),
                        await gateway.budgets.status("globex"))

    assert (acme.limit_tokens, acme.period) == (5000, "day")
    assert (globex.limit_tokens, globex.period) == (99, "total")


@pytest.mark.parametrize("fields, named", [
    ({"max_tokens": 20_000}, "max_tokens"),
    ({"cache_ttl_s": 10**9}, "cache_ttl_s"),
    ({"group": "nope"}, "configured: chat"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"temperature": "hot"}, "temperature"),
    ({"tenant": ""}, "tenant"),
    ({"stream": True}, "unknown request field(s) stream"),
])
async def test_bad_requests_are_refused_naming_the_field(
    openai: FakeOpenAI, fields: dict[str, Any], named: str,
) -> None:
    settings = settings_for([deployment("only", "chat", openai)])
    async with gateway_over(settings) as gateway:
        with pytest.raises(InvalidRequest) as refused:
            await gateway.complete({**request(), **fields})

    assert named in str(refused.value)
    assert not openai.requests


async def test_no_key_nor_prompt_reaches_the_logs_or_errors(
    openai: FakeOpenAI, backup: FakeAnthropic, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    settings = settings_for([deployment("primary", "chat", openai, api_key_file=str(key_file)),
                             deployment("claude", "chat", backup)])
    openai.script([Fault.status(401, message=f"invalid key {KEY}")])
    caplog.set_level(logging.DEBUG)
    async with gateway_over(settings) as gateway:
        with pytest.raises(LlmError) as refused:
            await gateway.complete(request())
        openai.script([Fault.status(500)])
        answered = await gateway.complete(request())

    assert openai.requests[0].headers["authorization"] == f"Bearer {KEY}"  # the key was sent
    assert KEY in str(backup.requests[0].headers), backup.requests[0].headers
    assert answered["deployment"] == "claude"
    words = str(refused.value) + repr(refused.value.args) + str(refused.value.details)
    assert KEY not in words and KEY not in caplog.text
    assert PROMPT not in caplog.text
    assert "failed" in caplog.text  # the logs were captured, and say what went wrong


async def test_prompts_are_logged_only_when_the_setting_says_so(
    openai: FakeOpenAI, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = settings_for([deployment("only", "chat", openai)], log_prompts=True)
    try:
        async with gateway_over(settings) as gateway:
            await gateway.complete(request())
    finally:
        from ml.llm.providers import set_prompt_logging

        set_prompt_logging(False)

    assert PROMPT in caplog.text


async def test_no_deployment_answering_names_each_failure(openai: FakeOpenAI) -> None:
    settings = settings_for([deployment("only", "chat", openai)])
    openai.script([Fault.status(503, message="down for maintenance")])
    async with gateway_over(settings) as gateway:
        with pytest.raises(NoDeploymentAnswered) as failed:
            await gateway.complete(request())

    assert "only" in str(failed.value) and "down for maintenance" in str(failed.value)
