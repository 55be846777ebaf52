"""The model-answer cache: exact matches only, per tenant, within the TTL, across processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import pytest

from storage.errors import InvalidRequest
from storage.llm_cache import LlmResponseCache, cache_key

MESSAGES = [("system", "Be brief."), ("user", "Translate 'good morning' into French.")]
PARAMS = {"max_tokens": 64, "temperature": 0.0}
ANSWER = {"text": "Bonjour", "usage": {"input_tokens": 12, "output_tokens": 2}}


@pytest.fixture
async def cache(database_url: str) -> AsyncIterator[LlmResponseCache]:
    async with await LlmResponseCache.open(database_url) as opened:
        yield opened


def test_the_key_changes_with_every_part_of_the_request() -> None:
    key = cache_key("acme", "default", MESSAGES, PARAMS)

    assert key == cache_key("acme", "default", list(MESSAGES), dict(reversed(PARAMS.items())))
    assert len({
        key,
        cache_key("globex", "default", MESSAGES, PARAMS),
        cache_key("acme", "large", MESSAGES, PARAMS),
        cache_key("acme", "default", MESSAGES[1:], PARAMS),
        cache_key("acme", "default", [("user", "Be brief."), MESSAGES[1]], PARAMS),
        cache_key("acme", "default", MESSAGES, {**PARAMS, "temperature": 0.5}),
    }) == 6


async def test_an_answer_is_served_again_and_survives_a_restart(database_url: str) -> None:
    key = cache_key("acme", "default", MESSAGES, PARAMS)
    async with await LlmResponseCache.open(database_url) as first:
        assert await first.get("acme", key) is None
        await first.put("acme", key, ANSWER, ttl_s=60)
        assert await first.get("acme", key) == ANSWER

    async with await LlmResponseCache.open(database_url) as restarted:
        assert await restarted.get("acme", key) == ANSWER


async def test_one_tenants_entry_never_serves_another(cache: LlmResponseCache) -> None:
    key = cache_key("acme", "default", MESSAGES, PARAMS)
    await cache.put("acme", key, ANSWER, ttl_s=60)

    assert await cache.get("globex", key) is None  # even with acme's exact key
    assert await cache.get("globex", cache_key("globex", "default", MESSAGES, PARAMS)) is None
    assert await cache.clear("globex") == 0
    assert await cache.get("acme", key) == ANSWER


async def test_an_expired_entry_is_never_served(database_url: str) -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)
    key = cache_key("acme", "default", MESSAGES, PARAMS)
    async with await LlmResponseCache.open(database_url) as writer, \
            await LlmResponseCache.open(database_url) as reader:
        writer.clock = reader.clock = lambda: now
        await writer.put("acme", key, ANSWER, ttl_s=30)
        assert await reader.get("acme", key) == ANSWER  # now in both processes' fronts

        now += timedelta(seconds=31)

        assert await writer.get("acme", key) is None
        assert await reader.get("acme", key) is None
        assert await writer.purge_expired() == 1


async def test_a_callers_changes_never_reach_the_cached_answer(cache: LlmResponseCache) -> None:
    key = cache_key("acme", "default", MESSAGES, PARAMS)
    answer = {"text": "Bonjour", "tags": ["fr"]}
    await cache.put("acme", key, answer, ttl_s=60)
    answer["tags"].append("changed")

    served = await cache.get("acme", key)
    served["text"] = "changed"

    assert await cache.get("acme", key) == {"text": "Bonjour", "tags": ["fr"]}


async def test_the_memory_front_is_bounded_and_the_database_still_answers(
    database_url: str,
) -> None:
    async with await LlmResponseCache.open(database_url) as cache:
        cache.memory_entries = 2
        keys = [cache_key("acme", "default", [("user", str(i))], {}) for i in range(5)]
        for index, key in enumerate(keys):
            await cache.put("acme", key, {"text": str(index)}, ttl_s=60)

        assert len(cache._memory) == 2
        assert [await cache.get("acme", key) for key in keys] == [
            {"text": str(i)} for i in range(5)]


async def test_put_replaces_an_entry_and_its_ttl(cache: LlmResponseCache) -> None:
    key = cache_key("acme", "default", MESSAGES, PARAMS)
    await cache.put("acme", key, ANSWER, ttl_s=60)
    await cache.put("acme", key, {"text": "Salut"}, ttl_s=120)

    assert await cache.get("acme", key) == {"text": "Salut"}
    assert await cache.clear("acme") == 1
    assert await cache.get("acme", key) is None


@pytest.mark.parametrize(("value", "ttl_s", "message"), [
    (ANSWER, 0, "ttl_s must be positive"),
    (None, 60, "None cannot be cached"),
    ({"text": {1, 2}}, 60, "must be a JSON value"),
])
async def test_bad_entries_are_refused(cache: LlmResponseCache, value, ttl_s: float,
                                       message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        await cache.put("acme", "k", value, ttl_s=ttl_s)


def test_parameters_must_be_json() -> None:
    with pytest.raises(InvalidRequest, match="must be JSON values"):
        cache_key("acme", "default", MESSAGES, {"stop": object()})
