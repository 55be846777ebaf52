"""Rate limits shared through Redis by two API replicas on Ray Serve, over real HTTP: a caller
gets its budget once in all, not once per replica."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import httpx
import pytest
from ray import serve

from serve_apps.api_config import ApiConfig
from serve_apps.deployment import deploy_api, shutdown_api
from serve_apps.passwords import hash_password
from serve_apps.rate_limit import RateLimit
from storage.auth_store import AuthStore
from tests.support.platform import run_platform
from tests.support.redis_service import REDIS_URL, delete_namespace, require_redis

pytestmark = pytest.mark.cluster

API = "/api/v1"
APP_NAME = "ymera-api-limits-test"
SECRET = "Hk3v_Wp9xRz2Qm7Ty4Ub8Nc1Jd6Lf5Ga-EsT0kB3nM7pX2cV6tY1uI8oP5aS0dF"
PASSWORD = "correct horse battery staple"
BUDGET = 6


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _create_user(database_url: str) -> None:
    async with await AuthStore.open(database_url) as store:
        await store.create_user("acme", "viewer@acme", hash_password(PASSWORD), "viewer")


@pytest.fixture(scope="module")
def api_url(ray_cluster, tmp_path_factory) -> Iterator[str]:
    require_redis()
    for client in run_platform("sqlite", tmp_path_factory.mktemp("serve-limits")):
        asyncio.run(_create_user(client.config.database_url))
        config = ApiConfig(jwt_secret=SECRET, namespace=client.config.namespace,
                           database_url=client.config.database_url, redis_url=REDIS_URL,
                           key_rate_limit=RateLimit(requests=BUDGET, per_s=600.0))
        url = deploy_api(config, port=_free_port(), replicas=2, name=APP_NAME)
        try:
            yield url
        finally:
            shutdown_api(APP_NAME)
            asyncio.run(delete_namespace(client.config.namespace))


def test_two_replicas_share_one_budget_per_caller(api_url: str) -> None:
    deployment = serve.status().applications[APP_NAME].deployments["ApiIngress"]
    assert deployment.replica_states.get("RUNNING") == 2
    with httpx.Client(base_url=api_url, timeout=30) as http:
        login = http.post(f"{API}/auth/token",
                          json={"tenant": "acme", "username": "viewer@acme",
                                "password": PASSWORD})
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        answers = [http.get(f"{API}/tasks", headers=headers) for _ in range(3 * BUDGET)]

    statuses = [a.status_code for a in answers]
    assert statuses == [200] * BUDGET + [429] * (2 * BUDGET), statuses
    refused = answers[-1]
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert refused.json()["error"]["code"] == "rate_limited"
    assert answers[0].headers["RateLimit-Limit"] == str(BUDGET)
