"""The HTTP API deployed on Ray Serve, over real HTTP, on the parts of a production set-up:
two replicas behind Serve's proxy on loopback, a real orchestrator of the shared test cluster,
PostgreSQL for storage and Redis for rate limits and events. (The in-process app tests run on
the embedded SQLite.) The deployment is made once for the module."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from ray import serve
from ray.serve.schema import ServeDeploySchema

from actors.errors import PlatformUnavailable
from serve_apps.api_config import ApiConfig
from serve_apps.deployment import (
    LazyActorPort, app_builder, deploy_api, shutdown_api,
)
from serve_apps.passwords import hash_password
from serve_apps.rate_limit import RateLimit
from storage.auth_store import AuthStore
from tests.serve_apps.test_app_schema import exercise, operations_of
from tests.support.platform import run_platform
from tests.support.redis_service import REDIS_URL, delete_namespace, require_redis

API = "/api/v1"
APP_NAME = "ymera-api-test"
SECRET = "Zq4v_Lp2xQz8Wm4Ty6Ub1Nc7Hd5Jf0Ga-EsR9kB3nM7pX2cV6tY1uI8oP5aS0dF"
PASSWORD = "correct horse battery staple"
TENANTS = ("acme", "globex")
GENEROUS = RateLimit(requests=100_000, per_s=60.0)
SERVE_CONFIG = Path(__file__).resolve().parents[2] / "serve_apps" / "serve_config.yaml"


@dataclasses.dataclass(frozen=True)
class DeployedApi:
    url: str
    namespace: str


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _create_users(database_url: str) -> None:
    async with await AuthStore.open(database_url) as store:
        password_hash = hash_password(PASSWORD)
        for tenant in TENANTS:
            for role in ("submitter", "admin"):
                await store.create_user(tenant, f"{role}@{tenant}", password_hash, role)


@pytest.fixture(scope="module")
def deployed_api(ray_cluster, tmp_path_factory) -> Iterator[DeployedApi]:
    require_redis()
    for client in run_platform("postgresql", tmp_path_factory.mktemp("serve-api"),
                               redis_url=REDIS_URL):
        asyncio.run(_create_users(client.config.database_url))
        # limits that the schema run's few hundred calls stay inside
        config = ApiConfig(jwt_secret=SECRET, namespace=client.config.namespace,
                           database_url=client.config.database_url, redis_url=REDIS_URL,
                           wait_max_s=5.0, key_rate_limit=GENEROUS,
                           tenant_rate_limit=GENEROUS, failed_auth_rate_limit=GENEROUS)
        url = deploy_api(config, port=_free_port(), replicas=2, name=APP_NAME)
        try:
            yield DeployedApi(url, client.config.namespace)
        finally:
            shutdown_api(APP_NAME)
            asyncio.run(delete_namespace(client.config.namespace))


def _login(http: httpx.Client, tenant: str, role: str = "submitter") -> dict[str, str]:
    response = http.post(f"{API}/auth/token",
                         json={"tenant": tenant, "username": f"{role}@{tenant}",
                               "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.mark.cluster
def test_two_replicas_are_running(deployed_api: DeployedApi) -> None:
    application = serve.status().applications[APP_NAME]
    assert application.status == "RUNNING"
    deployment = application.deployments["ApiIngress"]
    assert deployment.replica_states.get("RUNNING") == 2


@pytest.mark.cluster
def test_health_and_docs_answer_over_http(deployed_api: DeployedApi) -> None:
    with httpx.Client(base_url=deployed_api.url, timeout=10) as http:
        health = http.get("/health")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        ready = http.get("/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"orchestrator": "ok", "router": "off",
                                          "storage": "ok", "redis": "ok"}
        openapi = http.get(f"{API}/openapi.json")
        assert openapi.status_code == 200 and f"{API}/tasks" in openapi.json()["paths"]
        docs = http.get(f"{API}/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()


@pytest.mark.cluster
def test_submit_wait_get_and_tenant_isolation(deployed_api: DeployedApi) -> None:
    with httpx.Client(base_url=deployed_api.url, timeout=60) as http:
        acme = _login(http, "acme")
        submitted = http.post(f"{API}/tasks", params={"wait": 5},
                              headers={**acme, "X-Request-ID": "serve-test-submit-1"},
                              json={"description": "echo", "agent_type": "sleeper",
                                    "payload": {"echo": 42, "seconds": 0.1}})
        assert submitted.status_code == 200, submitted.text
        assert submitted.headers.get_list("x-request-id") == ["serve-test-submit-1"]
        task = submitted.json()
        assert task["status"] == "succeeded" and task["result"]["echo"] == 42
        assert task["tenant"] == "acme"

        fetched = http.get(f"{API}/tasks/{task['id']}", headers=acme)
        assert fetched.status_code == 200 and fetched.json()["id"] == task["id"]

        hidden = http.get(f"{API}/tasks/{task['id']}", headers=_login(http, "globex"))
        assert hidden.status_code == 404, hidden.text
        assert hidden.json()["error"]["code"] == "not_found"


@pytest.mark.cluster
def test_a_spoofed_forwarded_for_through_serves_proxy_changes_nothing(
        deployed_api: DeployedApi) -> None:
    # Serve's proxy (uvicorn) trusts loopback and would take the header's hop as the peer
    with httpx.Client(base_url=deployed_api.url, timeout=30) as http:
        spoofed = [f"198.51.100.{i}" for i in range(3)]
        for hop in spoofed:
            failed = http.post(f"{API}/auth/token", headers={"X-Forwarded-For": hop}, json={
                "tenant": "globex", "username": "submitter@globex",
                "password": "not the password"})
            assert failed.status_code == 401, failed.text
        audit = http.get(f"{API}/audit", headers=_login(http, "globex", "admin"))
        assert audit.status_code == 200, audit.text
    failures = [e for e in audit.json()["events"] if e["action"] == "login_failed"]
    assert len(failures) == 3 and {e["client"] for e in failures} == {"127.0.0.1"}


@pytest.mark.cluster
def test_one_request_id_names_the_request(deployed_api: DeployedApi) -> None:
    with httpx.Client(base_url=deployed_api.url, timeout=10) as http:
        response = http.get(f"{API}/tasks")  # no id sent: Serve's proxy makes one
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"
        (request_id,) = response.headers.get_list("x-request-id")
        assert response.json()["error"]["request_id"] == request_id

        refused_id = "not a usable id"  # the app makes its own; Serve still echoes the caller's
        response = http.get(f"{API}/tasks", headers={"X-Request-ID": refused_id})
        app_id = response.json()["error"]["request_id"]
        assert app_id != refused_id
        assert sorted(response.headers.get_list("x-request-id")) == sorted([refused_id, app_id])


@pytest.mark.cluster
async def test_lazy_port_reports_a_missing_orchestrator(ray_cluster) -> None:
    with pytest.raises(PlatformUnavailable):
        await LazyActorPort("ymera-no-such-namespace").status()


def test_config_file_is_a_valid_serve_config(tmp_path: Path) -> None:
    document = yaml.safe_load(SERVE_CONFIG.read_text())
    ServeDeploySchema.model_validate(document)
    (application,) = document["applications"]
    assert application["import_path"] == "serve_apps.deployment:app_builder"
    assert "jwt_secret" not in application["args"]

    secret_file = tmp_path / "jwt-secret"
    secret_file.write_text(SECRET + "\n")
    args = {**application["args"], "jwt_secret_file": str(secret_file),
            "key_rate_limit": {"requests": 10, "per_s": 1.0}}
    built = app_builder(args)
    (config,) = built._bound_deployment.init_args
    assert config.jwt_secret == SECRET and config.namespace == "ymera"
    assert config.key_rate_limit.requests == 10
    assert "~" not in config.database_url


def test_builder_refuses_unknown_arguments_and_missing_secrets(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown API arguments"):
        app_builder({"jwt_secret": SECRET, "jwt_secrte": "typo"})
    with pytest.raises(ValueError, match="exactly one"):
        app_builder({})
    with pytest.raises(ValueError, match="cannot read"):
        app_builder({"jwt_secret_file": str(tmp_path / "missing")})


@pytest.mark.cluster
def test_the_deployed_api_conforms_to_the_schema_it_serves(deployed_api: DeployedApi) -> None:
    with httpx.Client(base_url=deployed_api.url, timeout=30) as http:
        document = http.get(f"{API}/openapi.json")
        assert document.status_code == 200
        headers = _login(http, "acme", "admin")
        statuses = {f"{op.method.upper()} {op.path}": exercise(
                        op, lambda kwargs: http.request(**kwargs), headers, deployed_api.url)
                    for op in operations_of(document.json())}
    assert all(statuses.values()), statuses
    for name in (f"GET {API}/tasks", f"GET {API}/users", f"GET {API}/agents"):
        assert 200 in statuses[name], (name, statuses[name])


def _events_of(http: httpx.Client, path: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """The events of an SSE stream that ends by itself, decoded."""
    events = []
    with http.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    return events


@pytest.mark.cluster
def test_a_task_stream_through_serve_sends_every_event_and_resumes(
        deployed_api: DeployedApi) -> None:
    with httpx.Client(base_url=deployed_api.url, timeout=30) as http:
        acme = _login(http, "acme")
        submitted = http.post(f"{API}/tasks", headers=acme, json={
            "description": "sleep", "agent_type": "sleeper", "payload": {"seconds": 0.5}})
        assert submitted.status_code == 202, submitted.text
        path = f"{API}/tasks/{submitted.json()['id']}/stream"
        events = _events_of(http, path, acme)
        kinds = [e["kind"] for e in events]
        assert kinds[0] == "queued" and kinds[-1] == "succeeded" and "started" in kinds
        assert [e["id"] for e in events] == sorted({e["id"] for e in events})
        resumed = _events_of(http, path, {**acme, "Last-Event-ID": str(events[0]["id"])})
        assert resumed == events[1:]


@pytest.mark.cluster
def test_nul_characters_are_refused_on_postgresql(deployed_api: DeployedApi) -> None:
    # PostgreSQL cannot store NUL in text: such input is a 400, never a storage failure
    with httpx.Client(base_url=deployed_api.url, timeout=30) as http:
        acme = _login(http, "acme")
        for method, path, body in (
                ("POST", f"{API}/tasks", {"description": "a\x00b", "agent_type": "sleeper"}),
                ("POST", f"{API}/auth/token", {"username": "x\x00", "password": "p"}),
                ("GET", f"{API}/tasks/abc%00", None)):
            response = http.request(method, path, json=body, headers=acme)
            assert response.status_code == 400, (path, response.text)
            assert response.json()["error"]["code"] == "invalid_request"


def _api_samples(metrics_url: str) -> list[tuple[str, dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(metrics_url, timeout=5).text
    return [(sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name.startswith("ray_ymera_api_")]


@pytest.mark.cluster
def test_request_metrics_reach_the_node_metrics_endpoint(deployed_api: DeployedApi) -> None:
    import ray

    node = ray.nodes()[0]
    metrics_url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    route = f"{API}/tasks/{{task_id}}"
    with httpx.Client(base_url=deployed_api.url, timeout=30) as http:
        acme = _login(http, "acme")
        for number in range(3):
            missing = http.get(f"{API}/tasks/no-such-task-{number}", headers=acme)
            assert missing.status_code == 404, missing.text
    answered: dict[str, float] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answered = {}
        for name, labels, value in _api_samples(metrics_url):
            if (labels.get("route") == route and labels.get("method") == "GET"
                    and labels.get("application") == APP_NAME):
                answered[f"{name}/{labels.get('status', '')}"] = (
                    answered.get(f"{name}/{labels.get('status', '')}", 0.0) + value)
        if (answered.get("ray_ymera_api_requests_total/404", 0) >= 3
                and answered.get("ray_ymera_api_request_duration_seconds_count/", 0) >= 3):
            break
        time.sleep(1)
    assert answered.get("ray_ymera_api_requests_total/404", 0) >= 3, answered
    assert answered.get("ray_ymera_api_request_duration_seconds_count/", 0) >= 3, answered
    assert not any("no-such-task" in str(labels) for _, labels, _ in _api_samples(metrics_url))
