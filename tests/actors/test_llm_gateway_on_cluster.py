"""The model gateway actor on the session's Ray cluster, against fake providers served from
threads of this process: answers, Ray streaming generators, breakers that outlive a restart
of the actor, and breakers shared by two gateways through Redis."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.exceptions import RayActorError, RayTaskError

from actors.llm_gateway import LlmGatewayActor, find_llm_gateway
from actors.ray_backend import RayBackend
from ml.llm.config import LlmConfig
from ml.llm.resilience import BreakerPolicy, RetryPolicy
from ml.llm.settings import LlmSettings
from storage.database import migrate
from storage.errors import InvalidRequest
from tests.support.fake_llm import FakeOpenAI, Fault, Reply, serving_in_thread
from tests.support.redis_service import REDIS_URL, redis_namespace

pytestmark = pytest.mark.cluster

RESTART_TIMEOUT_S = 60.0
METRICS_TIMEOUT_S = 20.0
REQUEST = {"tenant": "acme", "messages": [{"role": "user", "content": "Say hello in French."}]}


@pytest.fixture
def servers() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    with serving_in_thread(FakeOpenAI()) as primary, serving_in_thread(FakeOpenAI()) as backup:
        yield primary, backup  # type: ignore[misc]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    migrate(url)
    return url


def settings_for(primary: FakeOpenAI, backup: FakeOpenAI) -> LlmSettings:
    config = LlmConfig.from_dict({"deployments": [
        {"name": "primary", "group": "chat", "provider": "openai", "base_url": primary.base_url,
         "model": "fake-primary"},
        {"name": "backup", "group": "chat", "provider": "openai", "base_url": backup.base_url,
         "model": "fake-backup"}]})
    return LlmSettings(config, retry=RetryPolicy(attempts=1),
                       breaker=BreakerPolicy(failure_threshold=1, cooldown_s=600.0))


@pytest.fixture
def namespace() -> str:
    return f"llm-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def gateway(ray_cluster: None, servers: tuple[FakeOpenAI, FakeOpenAI], database_url: str,
            namespace: str) -> Iterator[Any]:
    """The gateway actor of a namespace of this test, started as the platform starts it."""
    handle = RayBackend(namespace).start_llm_gateway(
        settings_for(*servers), database_url, None, "text", "INFO")
    try:
        ray.get(handle.ready.remote(), timeout=60)
        yield handle
    finally:
        ray.kill(handle, no_restart=True)


async def test_the_actor_answers_and_is_found_by_name(
    gateway: Any, servers: tuple[FakeOpenAI, FakeOpenAI], namespace: str,
) -> None:
    primary, _ = servers
    primary.script([Reply("Bonjour", usage=(6, 1))])

    answer = await gateway.complete.remote({**REQUEST, "task_id": "t-1"})
    usage = await gateway.usage.remote("acme", "t-1")

    assert (answer["text"], answer["deployment"], answer["cached"]) == ("Bonjour", "primary",
                                                                        False)
    assert (usage["calls"], usage["input_tokens"], usage["output_tokens"]) == (1, 6, 1)
    found = find_llm_gateway(namespace)
    assert found is not None and found._actor_id == gateway._actor_id
    status = await found.status.remote()
    assert [(d["name"], d["breaker"]) for d in status["deployments"]] == [
        ("primary", "closed"), ("backup", "closed")]
    assert find_llm_gateway(f"{namespace}-other") is None


async def test_the_gateway_exports_its_metrics_through_ray(
    gateway: Any, servers: tuple[FakeOpenAI, FakeOpenAI],
) -> None:
    primary, _ = servers
    primary.script([Reply("Bonjour", usage=(6, 1))])
    await gateway.complete.remote({**REQUEST, "tenant": "metrics-tenant"})

    wanted = ('ray_ymera_llm_requests_total{', 'outcome="ok"', 'ray_ymera_llm_input_tokens_total',
              'tenant="metrics-tenant"', 'ray_ymera_llm_breaker_state{')
    deadline = time.monotonic() + METRICS_TIMEOUT_S
    text = ""
    while time.monotonic() < deadline:
        text = await asyncio.to_thread(_scrape)
        if all(part in text for part in wanted):
            break
        await asyncio.sleep(0.5)
    assert all(part in text for part in wanted), [p for p in wanted if p not in text]
    assert "Bonjour" not in text and "Say hello" not in text


def _scrape() -> str:
    port = ray.nodes()[0]["MetricsExportPort"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


async def test_a_bad_request_arrives_as_the_gateways_own_error(gateway: Any) -> None:
    with pytest.raises(RayTaskError) as failed:
        await gateway.complete.remote({**REQUEST, "max_tokens": 10**6})

    assert isinstance(failed.value.cause, InvalidRequest)
    assert "max_tokens" in str(failed.value.cause)


async def test_a_stream_is_a_ray_streaming_generator(
    gateway: Any, servers: tuple[FakeOpenAI, FakeOpenAI],
) -> None:
    primary, _ = servers
    primary.script([Reply("un deux trois", usage=(4, 3))])

    items = [await ref async for ref in gateway.stream.options(
        num_returns="streaming").remote(REQUEST)]

    assert [item["delta"] for item in items[:-1]] == ["un ", "deux ", "trois"]
    assert items[-1]["done"]["text"] == "un deux trois"


async def test_a_breaker_stays_open_across_a_restart_of_the_actor(
    gateway: Any, servers: tuple[FakeOpenAI, FakeOpenAI],
) -> None:
    primary, backup = servers
    primary.script([Fault.status(500)])
    assert (await gateway.complete.remote(REQUEST))["deployment"] == "backup"

    before = await gateway.__ray_call__.remote(_pid)
    ray.kill(gateway, no_restart=False)
    await _until_restarted(gateway, before)

    assert (await gateway.complete.remote(REQUEST))["deployment"] == "backup"
    assert len(primary.requests) == 1  # still skipped: the open breaker was kept in storage
    status = await gateway.status.remote()
    assert {d["name"]: d["breaker"] for d in status["deployments"]} == {
        "primary": "open", "backup": "closed"}


def _pid(_actor: Any) -> int:
    return os.getpid()


async def _until_restarted(handle: Any, old_pid: int) -> None:
    """Wait until the actor answers from a new process."""
    deadline = time.monotonic() + RESTART_TIMEOUT_S
    while True:
        try:
            if await handle.__ray_call__.remote(_pid) != old_pid:
                await handle.ready.remote()
                return
        except RayActorError:  # dead, or restarting
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gateway was not restarted within {RESTART_TIMEOUT_S:g}s")
        await asyncio.sleep(0.2)


async def test_two_gateways_share_their_breakers_through_redis(
    ray_cluster: None, servers: tuple[FakeOpenAI, FakeOpenAI], database_url: str,
) -> None:
    primary, _ = servers
    async with redis_namespace() as namespace:
        actor = ray.remote(LlmGatewayActor).options(num_cpus=0, max_concurrency=100)
        first, second = (actor.remote(settings_for(*servers), database_url, REDIS_URL, namespace,
                                      "text", "INFO") for _ in range(2))
        try:
            await asyncio.gather(first.ready.remote(), second.ready.remote())
            primary.script([Fault.status(500)])
            assert (await first.complete.remote(REQUEST))["deployment"] == "backup"

            assert (await second.complete.remote(REQUEST))["deployment"] == "backup"
            assert len(primary.requests) == 1  # the second gateway saw the breaker open
            status = await second.status.remote()
            assert status["breaker_store"] == "redis"
        finally:
            for handle in (first, second):
                ray.kill(handle, no_restart=True)

