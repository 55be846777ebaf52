"""The HTTP API in process, shared by the `test_app_*` modules: a real orchestrator on the
in-process backend, a migrated SQLite database shared with the auth store, the local rate
limiter, and an httpx client over ASGI. Users of two tenants, one per role, are ready."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from actors.config import PoolConfig
from actors.orchestrator import Orchestrator
from serve_apps.api_config import ApiConfig
from serve_apps.app import create_app
from serve_apps.passwords import hash_password
from serve_apps.rate_limit import LocalRateLimiter, RateLimit
from serve_apps.routes.access import Services
from storage.auth_store import AuthStore, User
from tests.support.inprocess_platform import inprocess_orchestrator

SECRET = "kR3v9_Lp2xQz8Wm4Ty6Ub1Nc7Hd5Jf0Ga-Es"
PASSWORD = "correct horse battery staple"
TENANTS = ("acme", "globex")
ROLES = ("admin", "operator", "submitter", "viewer")
GENEROUS = RateLimit(requests=100_000, per_s=60.0)


@dataclasses.dataclass
class Platform:
    """Everything a test drives or inspects."""

    orchestrator: Orchestrator
    auth_store: AuthStore
    limiter: LocalRateLimiter
    config: ApiConfig
    users: dict[tuple[str, str], User]  # (tenant, role) → user
    url: str

    def client(self, **config_changes: Any) -> httpx.AsyncClient:
        """A client of a fresh app over this platform (own limiter when limits change)."""
        config = dataclasses.replace(self.config, **config_changes)
        limiter = LocalRateLimiter() if config_changes else self.limiter
        app = create_app(config, self.orchestrator, self.auth_store, limiter)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver")

    def services(self) -> Services:
        app = create_app(self.config, self.orchestrator, self.auth_store,
                         self.limiter)
        return app.state.services

    def bearer(self, tenant: str, role: str) -> dict[str, str]:
        """Authorization header with a fresh access token of that tenant's user of `role`."""
        user = self.users[(tenant, role)]
        token = self.services().tokens.issue_access(user.id, user.tenant, user.role).token
        return {"Authorization": f"Bearer {token}"}


@contextlib.asynccontextmanager
async def running_platform(tmp_path, namespace: str = "ymera",
                           redis_url: str | None = None) -> AsyncIterator[Platform]:
    """A platform on a fresh database; with `redis_url` the orchestrator publishes its events
    there under `namespace` and the API reads the same."""
    async with inprocess_orchestrator(
            tmp_path, namespace=namespace, redis_url=redis_url,
            pools={"sleeper": PoolConfig(replicas=1, concurrency=4),
                   "flaky": PoolConfig(replicas=1, concurrency=4),
                   "knowledge": PoolConfig(replicas=1, concurrency=4)}) as orchestrator:
        url = orchestrator.config.database_url
        auth_store = await AuthStore.open(url)
        limiter = LocalRateLimiter()
        password_hash = hash_password(PASSWORD)
        users = {(tenant, role): await auth_store.create_user(
            tenant, f"{role}@{tenant}", password_hash, role)
            for tenant in TENANTS for role in ROLES}
        config = ApiConfig(jwt_secret=SECRET, database_url=url, namespace=namespace,
                           redis_url=redis_url, key_rate_limit=GENEROUS,
                           tenant_rate_limit=GENEROUS, wait_max_s=10.0,
                           max_body_bytes=64 * 1024)
        try:
            yield Platform(orchestrator, auth_store, limiter, config, users, url)
        finally:
            await auth_store.close()
            await limiter.close()


@pytest.fixture
async def platform(tmp_path) -> AsyncIterator[Platform]:
    async with running_platform(tmp_path) as running:
        yield running


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with platform.client() as client:
        yield client


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]
