"""Routing memory over HTTP, with the real router in process: one tenant's feedback never shows
in another tenant's route explanations, never moves its decisions, and is never replaced by
another tenant's feedback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from actors.config import PoolConfig
from actors.orchestrator import Orchestrator
from ml.config import RouterConfig
from serve_apps.api_config import ApiConfig
from serve_apps.app import create_app
from serve_apps.passwords import hash_password
from serve_apps.rate_limit import LocalRateLimiter
from storage.auth_store import AuthStore
from storage.database import migrate_async
from tests.serve_apps.test_app_harness import GENEROUS, PASSWORD, SECRET, TENANTS, Platform
from tests.support.inprocess_backend import InProcessBackend
from tests.support.inprocess_platform import config_for_tests, vanish

API = "/api/v1"
CANARY = "Zephyr-Holdings-q81x"
TEXT = f"tidy up the figures of the confidential {CANARY} invoice for the board"


@pytest.fixture
async def platform(tmp_path) -> AsyncIterator[Platform]:
    url = f"sqlite:///{tmp_path}/ymera.db"
    await migrate_async(url)
    backend = InProcessBackend()
    orchestrator = Orchestrator(config_for_tests(
        url, router=RouterConfig(stats_interval_s=3600.0, learn=False),
        pools={"sleeper": PoolConfig(replicas=1, concurrency=4)}), backend=backend)
    await asyncio.wait_for(orchestrator.ready(), 180)  # the router loads the embedding model
    auth_store = await AuthStore.open(url)
    limiter = LocalRateLimiter()
    users = {(tenant, "submitter"): await auth_store.create_user(
        tenant, f"submitter@{tenant}", hash_password(PASSWORD), "submitter")
        for tenant in TENANTS}
    config = ApiConfig(jwt_secret=SECRET, database_url=url, key_rate_limit=GENEROUS,
                       tenant_rate_limit=GENEROUS, wait_max_s=10.0)
    try:
        yield Platform(orchestrator, auth_store, limiter, config, users, url)
    finally:
        await auth_store.close()
        await limiter.close()
        await orchestrator.drain(5)
        await vanish(orchestrator)
        await backend.actors["router"].replica.close()


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(platform.config, platform.orchestrator, platform.auth_store,
                     platform.limiter)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        yield client


async def _feedback(client: httpx.AsyncClient, headers: dict[str, str], text: str,
                    agent_type: str) -> dict:
    done = await client.post(f"{API}/tasks?wait=5", headers=headers,
                             json={"description": text, "agent_type": "sleeper"})
    assert done.status_code == 200, done.text
    taught = await client.post(f"{API}/tasks/{done.json()['id']}/feedback", headers=headers,
                               json={"agent_type": agent_type})
    assert taught.status_code == 200, taught.text
    return taught.json()


async def test_a_tenants_feedback_stays_out_of_another_tenants_routes(
    platform: Platform, client: httpx.AsyncClient,
) -> None:
    acme, globex = (platform.bearer(tenant, "submitter") for tenant in TENANTS)
    before = await client.post(f"{API}/route", headers=globex, json={"description": TEXT})
    assert before.status_code == 200, before.text

    taught = await _feedback(client, acme, TEXT, "flaky")
    own = (await client.post(f"{API}/route", headers=acme, json={"description": TEXT})).json()
    other = await client.post(f"{API}/route", headers=globex, json={"description": TEXT})

    assert taught == {"agent_type": "flaky", "added": True, "replaced": 0}
    assert own["agent_type"] == "flaky" and own["nearest"][0]["text"] == TEXT
    assert other.status_code == 200 and CANARY not in other.text
    assert other.json() == before.json()

    answer = await _feedback(client, globex, TEXT.upper(), "sleeper")
    again = (await client.post(f"{API}/route", headers=acme, json={"description": TEXT})).json()

    assert answer["replaced"] == 0
    assert again["agent_type"] == "flaky" and again["nearest"][0]["text"] == TEXT
