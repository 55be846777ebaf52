"""A storage outage, in process: the orchestrator's database (a PostgreSQL server of this test's
own) stops, and both the orchestrator's callers and the HTTP API answer with the platform's
retryable error, never the driver's exception; once the server is back, work goes on."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from actors.config import PoolConfig
from actors.errors import PlatformUnavailable
from actors.orchestrator import Orchestrator
from serve_apps.api_config import ApiConfig
from serve_apps.app import create_app
from serve_apps.passwords import hash_password
from serve_apps.rate_limit import LocalRateLimiter
from storage.auth_store import AuthStore
from storage.database import migrate_async
from storage.messages import TaskRequest, TaskStatus
from tests.serve_apps.test_app_harness import GENEROUS, PASSWORD, SECRET
from tests.support.inprocess_platform import inprocess_orchestrator
from tests.support.private_postgres import PrivatePostgres, private_postgres

API = "/api/v1"


@pytest.fixture(scope="module")
def server() -> Iterator[PrivatePostgres]:
    with private_postgres() as running:
        yield running


@dataclasses.dataclass
class Outage:
    server: PrivatePostgres
    orchestrator: Orchestrator
    http: httpx.AsyncClient
    headers: dict[str, str]


@pytest.fixture
async def outage(server: PrivatePostgres, tmp_path) -> AsyncIterator[Outage]:
    """The orchestrator on the private server; the API's own auth store on SQLite, so only
    the orchestrator's storage goes away."""
    auth_url = f"sqlite:///{tmp_path}/auth.db"
    await migrate_async(auth_url)
    async with inprocess_orchestrator(tmp_path, database_url=server.url,
                                      pools={"sleeper": PoolConfig(replicas=1)}) as orchestrator:
        auth_store = await AuthStore.open(auth_url)
        limiter = LocalRateLimiter()
        config = ApiConfig(jwt_secret=SECRET, database_url=auth_url,
                           key_rate_limit=GENEROUS, tenant_rate_limit=GENEROUS)
        app = create_app(config, orchestrator, auth_store, limiter)
        user = await auth_store.create_user("acme", "admin@acme", hash_password(PASSWORD), "admin")
        token = app.state.services.tokens.issue_access(user.id, user.tenant, user.role).token
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://testserver") as http:
                yield Outage(server, orchestrator, http, {"Authorization": f"Bearer {token}"})
        finally:
            if not _accepting(server):
                server.start()
            await auth_store.close()
            await limiter.close()


def _accepting(server: PrivatePostgres) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    except OSError:
        return False
    return True


def _request(description: str = "nap") -> TaskRequest:
    return TaskRequest(description, {"seconds": 0}, "sleeper", tenant="acme")


async def test_storage_outage_is_platform_unavailable_to_callers(outage: Outage) -> None:
    orchestrator = outage.orchestrator
    (done,) = await orchestrator.submit_many([_request()])
    outage.server.stop()
    with pytest.raises(PlatformUnavailable, match="storage is unavailable"):
        await orchestrator.submit_many([_request()])
    with pytest.raises(PlatformUnavailable):
        await orchestrator.get(done)
    with pytest.raises(PlatformUnavailable):
        await orchestrator.attempts(done, "acme")
    outage.server.start()
    (again,) = await orchestrator.submit_many([_request("after the outage")])
    assert (await orchestrator.wait(again, 10)).status is TaskStatus.SUCCEEDED


async def test_storage_outage_is_a_retryable_503_over_http(outage: Outage) -> None:
    created = await outage.http.post(f"{API}/tasks", headers=outage.headers,
                                     json={"description": "nap", "agent_type": "sleeper",
                                           "payload": {"seconds": 0}})
    assert created.status_code == 202, created.text
    task_id = created.json()["id"]
    outage.server.stop()
    for method, path, body in (
            ("POST", f"{API}/tasks", {"description": "nap", "agent_type": "sleeper"}),
            ("GET", f"{API}/tasks/{task_id}", None),
            ("GET", f"{API}/tasks/{task_id}/attempts", None)):
        response = await outage.http.request(method, path, json=body, headers=outage.headers)
        assert response.status_code == 503, (path, response.text)
        assert response.json()["error"]["code"] == "platform_unavailable"
        assert int(response.headers["Retry-After"]) >= 1
    outage.server.start()
    response = await outage.http.get(f"{API}/tasks/{task_id}", headers=outage.headers)
    assert response.status_code == 200
