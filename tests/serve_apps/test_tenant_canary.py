"""The cross-tenant canary: tenant A's data carries a unique string, and nothing tenant B can
reach shows it.

A runs on a production-shaped platform (the HTTP API deployed on Ray Serve, PostgreSQL, Redis,
the real router actor and one replica of every built-in agent). A's tasks, routing feedback,
learned routes, dead letters, inbox messages (from the communication agent and sent over
HTTP), batch, workflow runs (one awaiting approval, one failed), users, API keys, audit entries,
a webhook subscription, its deliveries and a task's callback all carry the canary; so does a
cached answer of the `llm` agent (through the model gateway, to a fake OpenAI-compatible
server), whose tokens are counted in A's usage; and a document of A's `handbook` knowledge
collection. B, a tenant administrator (the widest tenant role), then

- calls every route of the permission table (`ROUTE_PERMISSIONS`, so a new route is covered
  as soon as it is added), with A's ids in the path where the route takes one, and its own;
- runs every built-in agent type, monitoring included, and asks the router to explain
  descriptions close to A's;
- reads the SSE streams, and its agents' inboxes through the Python client and over HTTP,
  and tries to acknowledge A's messages there;
- asks the `llm` agent exactly what A asked, with caching on: it gets its own answer, not A's;
- searches and asks its own `handbook` collection, by type and routed by meaning;

and no response body, header or stream event B receives contains the canary. Afterwards A's
objects are as they were: B's attempts changed nothing (A's messages unread, A's subscription
and its secret unchanged, A's deliveries as they stood), and A's model usage is what A spent.

Issues that add a kind of tenant data (knowledge documents, webhooks) extend A's set-up here;
their routes join the walk through the permission table by themselves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from actors.config import PoolConfig, WebhookSettings
from cluster.client import Client
from ml.config import RouterConfig
from serve_apps.api_config import ApiConfig
from serve_apps.deployment import deploy_api, shutdown_api
from serve_apps.passwords import hash_password
from serve_apps.rate_limit import RateLimit
from serve_apps.routes.access import API_PREFIX, ROUTE_PERMISSIONS
from storage.auth_store import AuthStore
from storage.errors import NotFound
from storage.webhook_store import WebhookStore
from ml.llm.settings import LlmSettings, single_endpoint
from tests.support.fake_llm import FakeOpenAI, Reply, serving_in_thread
from tests.support.platform import run_platform, wait_until
from tests.support.redis_service import REDIS_URL, delete_namespace, require_redis

pytestmark = pytest.mark.cluster

APP_NAME = "ymera-canary-test"
SECRET = "Kp3w_Qz9xLm2Vn8Tb4Ry6Uc1Hd7Jf5Ga-EsW0kB3nM7pX2cV6tY1uI8oP5aS0dF"
PASSWORD = "violet tractor hums beneath quiet harbour"
GENEROUS = RateLimit(requests=100_000, per_s=60.0)
CANARY = f"zqcanary{uuid.uuid4().hex[:12]}"
A, B = "canary-a", "canary-b"
BUILT_INS = ("calculator", "data_processor", "text_analysis", "validation", "learning",
             "monitoring", "communication")
# A's routed sentence; B asks about the same sentence without the canary
ROUTED = "work out the invoice total for the confidential {} Zephyr Holdings account: 120 + 80"
FEEDBACK = "check the confidential {} Zephyr Holdings ledger rows for missing invoice ids"
# A and B ask the llm agent the same thing, caching on; only A's answer carries the canary
SUMMARY = {"operation": "summarize", "text": "The quarterly memo, as circulated to the board.",
           "cache_ttl_s": 600}


@dataclasses.dataclass
class TenantA:
    """What A left on the platform: every id B will try."""

    task_ids: list[str]
    routed_task_id: str
    dead_task_id: str
    failed_task_id: str
    batch_id: str
    user_id: str
    key_id: str
    key: str
    message_ids: list[str]
    waiting_run_id: str
    failed_run_id: str
    llm_usage: dict[str, Any]
    webhook_id: str
    webhook_secret: str
    delivery_ids: list[str]
    callback_secret: str

    @property
    def run_ids(self) -> list[str]:
        return [self.waiting_run_id, self.failed_run_id]


@dataclasses.dataclass
class Platform:
    url: str
    client: Client
    a: TenantA


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _create_admins(database_url: str) -> None:
    async with await AuthStore.open(database_url) as store:
        password_hash = hash_password(PASSWORD)
        for tenant in (A, B):
            await store.create_user(tenant, f"admin-{tenant}", password_hash, "admin")


def login(http: httpx.Client, tenant: str, username: str | None = None) -> dict[str, str]:
    response = http.post(f"{API_PREFIX}/auth/token", json={
        "tenant": tenant, "username": username or f"admin-{tenant}", "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _submit(http: httpx.Client, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = http.post(f"{API_PREFIX}/tasks", headers=headers, json=body)
    assert response.status_code in (200, 202), response.text
    return response.json()


def _finished(http: httpx.Client, headers: dict[str, str], task_id: str,
              timeout_s: float = 120.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        task = http.get(f"{API_PREFIX}/tasks/{task_id}", headers=headers).json()
        return task if task["status"] in ("succeeded", "failed", "dead", "cancelled") else None
    return wait_until(done, timeout_s=timeout_s, interval_s=0.2, what=f"task {task_id} to end")


def _run(http: httpx.Client, headers: dict[str, str], run_id: str,
         condition: Any, what: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        run = http.get(f"{API_PREFIX}/runs/{run_id}", headers=headers).json()
        return run if condition(run) else None
    return wait_until(reached, timeout_s=120, interval_s=0.2, what=f"run {run_id} {what}")


def _step_status(run: dict[str, Any], step_id: str) -> str | None:
    return next((s["status"] for s in run["steps"] if s["step_id"] == step_id), None)


def _gated_workflow(note: str) -> dict[str, Any]:
    """A calculator step, then a person's approval of its total."""
    return {"name": "canary-gated", "version": "1", "steps": [
        {"id": "total", "agent_type": "calculator",
         "payload": {"expression": "120 + 80", "note": note}},
        {"id": "check", "depends_on": ["total"], "approval": {"timeout_s": 3600},
         "payload": {"about": note, "total": "${ steps.total.output }"}},
    ]}


def _leave_tenant_a_runs(http: httpx.Client, submitter: dict[str, str]) -> tuple[str, str]:
    """A run awaiting approval and a failed run, their inputs, payloads and outputs carrying
    the canary."""
    waiting = http.post(f"{API_PREFIX}/workflows", headers=submitter, json={
        "workflow": _gated_workflow(CANARY), "input": {"account": CANARY}})
    assert waiting.status_code in (200, 202), waiting.text
    failing = http.post(f"{API_PREFIX}/workflows", headers=submitter, json={
        "workflow": {"name": "canary-failing", "version": "1", "steps": [
            {"id": "check", "agent_type": "calculator", "max_attempts": 1,
             "payload": {"expression": f"{CANARY} + 1"}}]},
        "input": {"account": CANARY}})
    assert failing.status_code in (200, 202), failing.text
    _run(http, submitter, waiting.json()["id"],
         lambda run: _step_status(run, "check") == "awaiting_approval", "to await approval")
    _run(http, submitter, failing.json()["id"], lambda run: run["status"] == "failed",
         "to fail")
    return waiting.json()["id"], failing.json()["id"]


def _nearest_texts(route: dict[str, Any] | None) -> list[str]:
    return [example["text"] for example in (route or {}).get("nearest", [])]


def _leave_tenant_a_data(http: httpx.Client, client: Client, model: FakeOpenAI) -> TenantA:
    admin = login(http, A)
    # a user and an API key named after the canary: the audit log records both
    user = http.post(f"{API_PREFIX}/users", headers=admin, json={
        "username": f"{CANARY}-user", "password": PASSWORD, "role": "submitter"})
    assert user.status_code == 201, user.text
    key = http.post(f"{API_PREFIX}/keys", headers=admin,
                    json={"name": f"{CANARY} key", "role": "submitter"})
    assert key.status_code == 201, key.text
    submitter = login(http, A, f"{CANARY}-user")
    # a webhook of A's, to a loopback port nothing listens on: its deliveries stay pending
    hook = http.post(f"{API_PREFIX}/webhooks", headers=admin, json={
        "url": f"http://127.0.0.1:9/{CANARY}", "events": ["*"],
        "description": f"{CANARY} receiver"})
    assert hook.status_code == 201, hook.text
    callback_secret = http.get(f"{API_PREFIX}/webhooks/callback-secret", headers=admin)
    assert callback_secret.status_code == 200, callback_secret.text

    routed = _submit(http, submitter, description=ROUTED.format(CANARY),
                     payload={"expression": "120 + 80", "note": CANARY})
    failed = _submit(http, submitter, description=f"compute {CANARY}", agent_type="calculator",
                     payload={"expression": f"{CANARY} + 1"},
                     callback_url=f"http://127.0.0.1:9/callback/{CANARY}")
    dead = _submit(http, submitter, description=f"retry {CANARY}", agent_type="flaky",
                   max_attempts=1, payload={"succeed_on": 5, "note": CANARY})
    batch_id = f"batch-{uuid.uuid4().hex[:8]}"
    batched = [_submit(http, submitter, description=f"{CANARY} batch line {number}",
                       agent_type="calculator", batch_id=batch_id,
                       payload={"expression": f"{number} * 2", "note": CANARY})
               for number in range(3)]
    message = _submit(http, submitter, agent_type="communication",
                      description=f"tell the learning agent about {CANARY}",
                      payload={"to_agent": "learning", "subject": f"{CANARY} arrived",
                               "message": {"dataset": CANARY}})
    per_type = [_submit(http, submitter, agent_type=agent_type, description=f"{CANARY} {agent_type}",
                        payload={**payload, "canary": CANARY})
                for agent_type, payload in _AGENT_PAYLOADS.items()]
    ids = [routed["id"], failed["id"], dead["id"], message["id"],
           *(task["id"] for task in batched), *(task["id"] for task in per_type)]
    for task_id in ids:
        _finished(http, submitter, task_id)
    assert _finished(http, submitter, dead["id"])["status"] == "dead"
    assert _finished(http, submitter, failed["id"])["status"] == "failed"

    # feedback: A teaches the router that its ledger sentence is validation work
    taught = _submit(http, submitter, description=FEEDBACK.format(CANARY),
                     agent_type="validation",
                     payload={"operation": "rules", "records": [{"id": 1}],
                              "rules": [{"rule": "not_null", "column": "id"}]})
    _finished(http, submitter, taught["id"])
    feedback = http.post(f"{API_PREFIX}/tasks/{taught['id']}/feedback", headers=submitter,
                         json={"agent_type": "validation"})
    assert feedback.status_code == 200, feedback.text
    ids.append(taught["id"])

    # the router has A's examples: A's own explanation shows them (so B's must not)
    def a_sees_its_example() -> bool:
        explained = http.post(f"{API_PREFIX}/route", headers=submitter,
                              json={"description": FEEDBACK.format("")})
        return any(CANARY in text for text in _nearest_texts(explained.json()))
    wait_until(a_sees_its_example, timeout_s=60, interval_s=0.5,
               what="A's feedback example in A's own routing explanation")

    sent = http.post(f"{API_PREFIX}/inbox/learning", headers=submitter,
                     json={"subject": f"{CANARY} by hand", "body": {"dataset": CANARY}})
    assert sent.status_code == 201, sent.text
    messages = client.inbox("learning", tenant=A, include_acked=True)["messages"]
    assert any(CANARY in str(message) for message in messages), messages
    assert sent.json()["id"] in {message.id for message in messages}
    delivered = http.get(f"{API_PREFIX}/webhooks/deliveries", headers=admin,
                         params={"limit": 500}).json()["deliveries"]
    assert {d["task_id"] for d in delivered} >= set(ids), "A's tasks made no deliveries"
    assert any(d["subscription_id"] is None for d in delivered), "no callback of A's task"
    waiting_run_id, failed_run_id = _leave_tenant_a_runs(http, submitter)
    llm_usage = _leave_tenant_a_model_answers(http, submitter, client, model)
    _leave_tenant_a_knowledge(client)
    return TenantA(task_ids=ids, routed_task_id=routed["id"], dead_task_id=dead["id"],
                   failed_task_id=failed["id"], batch_id=batch_id, user_id=user.json()["id"],
                   key_id=key.json()["id"], key=key.json()["key"],
                   message_ids=[message.id for message in messages],
                   waiting_run_id=waiting_run_id, failed_run_id=failed_run_id,
                   llm_usage=llm_usage, webhook_id=hook.json()["id"],
                   webhook_secret=hook.json()["secret"],
                   delivery_ids=[d["id"] for d in delivered],
                   callback_secret=callback_secret.json()["secret"])


HANDBOOK_QUESTION = "what does the handbook say about refunds?"


def _leave_tenant_a_knowledge(client: Client) -> None:
    """A's handbook holds a refunds page that carries the canary; A finds it."""
    text = (f"# Refunds\n\nRefunds for the {CANARY} programme are paid within 14 days of the "
            "return reaching our warehouse. Customers keep the shipping label.\n")
    client.knowledge_add(text.encode(), collection="handbook", name="refunds.md",
                         document_id="refunds", tenant=A)
    hits = client.knowledge_search("how long do refunds take?", collection="handbook",
                                   tenant=A)["hits"]
    assert hits and CANARY in hits[0]["text"]


def _leave_tenant_a_model_answers(http: httpx.Client, submitter: dict[str, str],
                                  client: Client, model: FakeOpenAI) -> dict[str, Any]:
    """A's summary, answered with the canary and cached for A; A's usage afterwards."""
    model.script([Reply(f"The memo says {CANARY} is confidential.", usage=(30, 8))])
    first = _finished(http, submitter, _submit(http, submitter, agent_type="llm",
                                               description="summarize", payload=SUMMARY)["id"])
    again = _finished(http, submitter, _submit(http, submitter, agent_type="llm",
                                               description="summarize", payload=SUMMARY)["id"])
    assert first["status"] == again["status"] == "succeeded", (first, again)
    assert CANARY in first["result"]["text"] and not first["result"]["cached"]
    assert again["result"]["cached"] and again["result"]["text"] == first["result"]["text"]
    usage = client.llm_usage(A)["usage"]
    assert usage["calls"] == 1 and usage["input_tokens"] == 30
    return usage


ROWS = [{"region": "north", "sales": 120}, {"region": "south", "sales": 80}]
_AGENT_PAYLOADS: dict[str, dict[str, Any]] = {
    "calculator": {"expression": "2 + 2"},
    "data_processor": {"operation": "group_by", "rows": ROWS, "by": "region",
                       "aggregates": {"total": {"column": "sales", "fn": "sum"}}},
    "text_analysis": {"operation": "statistics", "text": "The cat sat on the mat."},
    "validation": {"operation": "schema", "schema": {"type": "object", "required": ["id"]},
                   "records": [{"id": 1}, {}]},
    "learning": {"task": "regression", "target": "y",
                 "rows": [{"x": x, "y": 2 * x + 1} for x in range(30)], "predict": [{"x": 100}]},
}
MONITORING_QUESTIONS = tuple(
    (f"monitoring question about {topic}", {"topic": topic})
    for topic in ("overview", "nodes", "pools", "queues", "failures", "latency")
) + (("which agent type failed most in the last hour?", {}),
     ("which calculator tasks failed or went dead?", {"agent_type": "calculator"}))


@pytest.fixture(scope="module")
def platform(ray_cluster, tmp_path_factory) -> Iterator[Platform]:
    require_redis()
    pools = {name: PoolConfig(replicas=0) for name in ("sleeper", "hanger")}
    pools.update({name: PoolConfig(replicas=1)
                  for name in (*BUILT_INS, "flaky", "llm", "knowledge")})
    model = FakeOpenAI()
    with serving_in_thread(model):
        yield from _platform(tmp_path_factory, pools, model)


def _platform(tmp_path_factory: Any, pools: dict[str, PoolConfig],
              model: FakeOpenAI) -> Iterator[Platform]:
    llm = LlmSettings(single_endpoint(model.base_url, "fake-model"))
    for client in run_platform("postgresql", tmp_path_factory.mktemp("canary"), pools=pools,
                               redis_url=REDIS_URL, router=RouterConfig(stats_interval_s=2.0),
                               llm=llm,
                               webhooks=WebhookSettings(allowed_networks=("127.0.0.0/8",))):
        asyncio.run(_create_admins(client.config.database_url))
        config = ApiConfig(jwt_secret=SECRET, namespace=client.config.namespace,
                           database_url=client.config.database_url, redis_url=REDIS_URL,
                           wait_max_s=5.0, key_rate_limit=GENEROUS, tenant_rate_limit=GENEROUS)
        url = deploy_api(config, port=_free_port(), replicas=1, name=APP_NAME)
        try:
            with httpx.Client(base_url=url, timeout=60) as http:
                a = _leave_tenant_a_data(http, client, model)
            yield Platform(url, client, a)
        finally:
            shutdown_api(APP_NAME)
            asyncio.run(delete_namespace(client.config.namespace))


class Seen:
    """Everything B received, to search for the canary, with where it came from."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def response(self, where: str, response: httpx.Response) -> httpx.Response:
        self.items.append((f"{where} headers", str(list(response.headers.items()))))
        self.items.append((f"{where} body", response.text))
        return response

    def text(self, where: str, text: str) -> None:
        self.items.append((where, text))

    def leaks(self) -> list[str]:
        return [f"{where}: …{_around(text)}…" for where, text in self.items if CANARY in text]


def _around(text: str) -> str:
    at = text.index(CANARY)
    return text[max(0, at - 120):at + 120]


def _path_values(a: TenantA, own_task_id: str, own_run_id: str) -> dict[str, list[str]]:
    """Values for each path parameter of the permission table: A's ids, and B's own. A route
    with more than one parameter walks the values of its first; the others take their first
    value."""
    return {
        "task_id": [*a.task_ids, own_task_id],
        "batch_id": [a.batch_id],
        "key_id": [a.key_id],
        "user_id": [a.user_id],
        "agent_type": ["calculator"],
        "run_id": [*a.run_ids, own_run_id],
        "step_id": ["check"],
        "tenant": [A, B],
        "collection": ["handbook"],  # A's collection name: B has none of that name
        "document_id": ["refunds"],
        "subscription_id": [a.webhook_id],
        "delivery_id": a.delivery_ids[:5],
        "message_id": a.message_ids,
    }


def _bodies(own_task_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        ("POST", "/workflows"): {"workflow": _gated_workflow("b's own"), "input": {"b": 1}},
        ("POST", "/runs/{run_id}/steps/{step_id}/approve"): {"comment": "b approves"},
        ("POST", "/runs/{run_id}/steps/{step_id}/reject"): {"comment": "b rejects"},
        ("POST", "/runs/{run_id}/retry"): {"from_step": "check"},
        ("POST", "/tasks"): {"description": ROUTED.format("")},
        ("POST", "/route"): {"description": FEEDBACK.format("")},
        ("POST", "/tasks/{task_id}/feedback"): {"agent_type": "validation"},
        ("POST", "/keys"): {"name": "b key", "role": "viewer"},
        ("POST", "/users"): {"username": f"b-user-{uuid.uuid4().hex[:6]}",
                             "password": PASSWORD, "role": "viewer"},
        ("POST", "/users/{user_id}/role"): {"role": "viewer"},
        ("POST", "/agents/{agent_type}/scale"): {"replicas": 1},
        ("POST", "/plan"): {"request": FEEDBACK.format(""), "input": {"b": 1}},
        ("PUT", "/llm/budgets/{tenant}"): {"limit_tokens": 1},
        ("POST", "/knowledge/search"): {"query": FEEDBACK.format(""), "collection": "handbook"},
        ("POST", "/knowledge/answer"): {"question": FEEDBACK.format(""),
                                        "collection": "handbook"},
        ("POST", "/webhooks"): {"url": "http://127.0.0.1:9/b", "events": ["task.succeeded"]},
        ("PATCH", "/webhooks/{subscription_id}"): {"enabled": False,
                                                   "url": "http://127.0.0.1:9/b"},
        ("POST", "/webhooks/{subscription_id}/rotate-secret"): {"overlap_s": 0},
        ("POST", "/inbox/{agent_type}"): {"body": {"from": "b"}},
    }


def _read_stream(http: httpx.Client, path: str, headers: dict[str, str],
                 seconds: float) -> tuple[int, str]:
    """The status and what a stream sent within `seconds` (or until it ended)."""
    received: list[str] = []
    deadline = time.monotonic() + seconds
    try:
        with http.stream("GET", path, headers=headers,
                         timeout=httpx.Timeout(seconds, read=1.0)) as response:
            if response.status_code != 200:
                return response.status_code, response.read().decode()
            for line in response.iter_lines():
                received.append(line)
                if time.monotonic() > deadline:
                    break
    except httpx.ReadTimeout:
        pass
    return 200, "\n".join(received)


def test_tenant_b_never_sees_tenant_a_canary_anywhere(platform: Platform) -> None:
    a, seen = platform.a, Seen()
    with httpx.Client(base_url=platform.url, timeout=60) as http:
        b = login(http, B)
        own = _finished(http, b, _submit(http, b, description="what is 6 * 7",
                                         agent_type="calculator")["id"])
        own_run = http.post(f"{API_PREFIX}/workflows", headers=b, json={
            "workflow": _gated_workflow("b's own"), "input": {"b": 0}})
        assert own_run.status_code in (200, 202), own_run.text
        own_ids = {own["id"], own_run.json()["id"], "calculator"}

        # every route of the permission table, with A's ids and B's own
        values = _path_values(a, own["id"], own_run.json()["id"])
        bodies = _bodies(own["id"])
        walked = 0
        for (method, template), _permission in sorted(ROUTE_PERMISSIONS.items()):
            names = re.findall(r"{(\w+)}", template)
            missing = [name for name in names if name not in values]
            assert not missing, f"give the canary walk values for {missing} of {template}"
            for value in (values[names[0]] if names else [None]):
                path = template
                for name in names:
                    path = path.replace(f"{{{name}}}", value if name == names[0]
                                        else values[name][0])
                path = API_PREFIX + path
                where = f"{method} {path}"
                if template.endswith("stream"):
                    status, text = _read_stream(http, path, b, seconds=3.0)
                    seen.text(where, text)
                else:
                    response = seen.response(where, http.request(
                        method, path, headers=b, json=bodies.get((method, template))))
                    status = response.status_code
                if value is not None and value not in own_ids:
                    # one of A's objects: B can neither read nor act on it
                    assert status in (403, 404), f"{where} answered {status} to tenant B"
                walked += 1
        assert walked >= len(ROUTE_PERMISSIONS)

        # the tenant stream from the beginning of B's stored events, while A works
        a_submitter = login(http, A, f"{CANARY}-user")
        _submit(http, a_submitter, description=f"{CANARY} during B's stream",
                agent_type="calculator", payload={"expression": "1 + 1", "note": CANARY})
        status, text = _read_stream(http, f"{API_PREFIX}/stream",
                                    {**b, "Last-Event-ID": "0"}, seconds=4.0)
        assert status == 200
        seen.text("GET /stream from event 0", text)

        # every built-in agent type, and the router's explanations of A-like sentences
        b_tasks = [_submit(http, b, agent_type=agent_type, description=f"b {agent_type}",
                           payload=payload)
                   for agent_type, payload in _AGENT_PAYLOADS.items()]
        b_tasks += [_submit(http, b, agent_type="monitoring", description=question,
                            payload=payload) for question, payload in MONITORING_QUESTIONS]
        b_tasks.append(_submit(http, b, agent_type="communication",
                               description="tell the learning agent about b's data",
                               payload={"to_agent": "learning", "message": {"from": "b"}}))
        b_tasks += [_submit(http, b, description=text.format(""))
                    for text in (ROUTED, FEEDBACK)]
        for task in b_tasks:
            finished = _finished(http, b, task["id"])
            seen.text(f"B's {finished['agent_type']} task {finished['id']}", str(finished))
            assert finished["status"] in ("succeeded", "failed"), finished
        monitoring = [task for task in b_tasks if task.get("agent_type") == "monitoring"]
        assert monitoring, "B ran no monitoring task"

        # the model gateway's cache: B asks exactly what A asked, caching on
        summary = _finished(http, b, _submit(http, b, agent_type="llm", description="summarize",
                                             payload=SUMMARY)["id"])
        seen.text(f"B's llm task {summary['id']}", str(summary))
        assert summary["status"] == "succeeded" and not summary["result"]["cached"], summary
        b_usage = http.get(f"{API_PREFIX}/llm/usage", headers=b)
        seen.response("GET /llm/usage after B's calls", b_usage)
        assert b_usage.json()["usage"]["calls"] >= 1

        # knowledge: B's own handbook (empty), by type and routed by meaning
        platform.client.knowledge_add(b"# Travel\n\nBook trains two weeks ahead.\n",
                                      collection="handbook", name="travel.md", tenant=B)
        knowledge = [_submit(http, b, agent_type="knowledge", description="search the handbook",
                             payload={"operation": "search", "collection": "handbook",
                                      "query": "how long do refunds take?"}),
                     _submit(http, b, description=HANDBOOK_QUESTION)]
        for task in knowledge:
            finished = _finished(http, b, task["id"])
            seen.text(f"B's knowledge task {finished['id']}", str(finished))
        seen.text("B's knowledge listings", str(platform.client.knowledge_collections(tenant=B)))
        seen.text("B's handbook documents",
                  str(platform.client.knowledge_documents("handbook", tenant=B)))
        seen.text("B's handbook answer", str(platform.client.knowledge_answer(
            HANDBOOK_QUESTION, collection="handbook", tenant=B)))

        # the Python client's inboxes for B; B cannot acknowledge A's messages
        for agent_type in BUILT_INS:
            seen.text(f"inbox {agent_type} of B",
                      str(platform.client.inbox(agent_type, tenant=B, include_acked=True)))
        for message_id in a.message_ids:
            with pytest.raises(NotFound):
                platform.client.ack(message_id, tenant=B)
            acked = seen.response(f"POST /inbox/learning/{message_id}/ack", http.post(
                f"{API_PREFIX}/inbox/learning/{message_id}/ack", headers=b))
            assert acked.status_code == 404, acked.text
        seen.response("GET /inbox/learning", http.get(
            f"{API_PREFIX}/inbox/learning", headers=b, params={"include_acked": "true"}))
        b_secret = http.get(f"{API_PREFIX}/webhooks/callback-secret", headers=b)
        assert b_secret.json()["secret"] not in (a.callback_secret, a.webhook_secret)

        assert not seen.leaks(), "tenant B received tenant A's canary:\n" + "\n".join(seen.leaks())

        # B's attempts on A's objects changed nothing
        with_key = http.get(f"{API_PREFIX}/tasks", headers={"X-API-Key": a.key})
        assert with_key.status_code == 200, with_key.text
        assert login(http, A, f"{CANARY}-user")
        a_admin = login(http, A)
        users = http.get(f"{API_PREFIX}/users", headers=a_admin).json()
        mine = next(user for user in _listed(users) if user["id"] == a.user_id)
        assert mine["role"] == "submitter" and not mine["disabled"]
        dead = http.get(f"{API_PREFIX}/tasks/{a.dead_task_id}", headers=a_admin).json()
        assert dead["status"] == "dead", "B's requeue reached A's dead letter"
        waiting = http.get(f"{API_PREFIX}/runs/{a.waiting_run_id}", headers=a_admin).json()
        assert (waiting["status"], _step_status(waiting, "check")) == \
            ("waiting", "awaiting_approval"), "B's decision or cancel reached A's run"
        failed_run = http.get(f"{API_PREFIX}/runs/{a.failed_run_id}", headers=a_admin).json()
        assert (failed_run["status"], failed_run["generation"]) == ("failed", 0), \
            "B's retry reached A's failed run"
        a_refunds = platform.client.knowledge_search("refunds", collection="handbook", tenant=A)
        assert any(CANARY in hit["text"] for hit in a_refunds["hits"]), \
            "B's deletes reached A's handbook"
        assert platform.client.llm_usage(A)["usage"] == a.llm_usage, \
            "B's model calls were counted as A's"
        kept = platform.client.inbox("learning", tenant=A)["messages"]
        assert {message.id for message in kept} >= set(a.message_ids), \
            "B acknowledged A's inbox messages"
        hook = http.get(f"{API_PREFIX}/webhooks/{a.webhook_id}", headers=a_admin).json()
        assert (hook["enabled"], hook["url"], hook["secret_rotated_at"]) == \
            (True, f"http://127.0.0.1:9/{CANARY}", None), "B changed A's subscription"
        assert asyncio.run(_signing_secrets(platform.client.config.database_url,
                                            a.webhook_id)) == [a.webhook_secret]
        for delivery_id in a.delivery_ids[:5]:
            delivery = http.get(f"{API_PREFIX}/webhooks/deliveries/{delivery_id}",
                                headers=a_admin).json()
            assert delivery["status"] == "pending", "B redelivered or ended A's delivery"


async def _signing_secrets(database_url: str, subscription_id: str) -> list[str]:
    async with await WebhookStore.open(database_url) as store:
        return await store.signing_secrets(A, subscription_id)


def _listed(body: Any) -> list[dict[str, Any]]:
    return body if isinstance(body, list) else body.get("users", body.get("items", []))
