"""`ymera bench console`: the server time of the web console's task pages at 1k and 100k
tasks, in one run.

For each size it makes a database (SQLite in a temporary directory, and PostgreSQL when
reachable: a throwaway database on `--postgres-url`), writes that many finished tasks of the
signed-in tenant (with another tenant's tasks beside them, a tenth as many) straight into the
tasks table, signs in through the console's own form, then times, in process through ASGI
(so the time is the server's: routing, session, permission, rate limit, the store's query and
the page's rendering, with no network):
- `list`: `GET /console/tasks`, the first page (50 tasks, newest first);
- `list_status`: the first page of one status (`?status=failed`);
- `list_halfway`: the page at a keyset cursor halfway down the tenant's tasks;
- `task`: `GET /console/tasks/{id}`, one task's page with its attempts and events.

The console reads the store through its platform port; here the port is the store itself
(`StorePort`), as the orchestrator's read operations are pass-throughs to it
(`actors.store_reads`). Over Ray each port call adds one actor round trip (about 1 ms here).

Goal: p95 of `list` under 100 ms at 100k tasks. The tenant listing reads the tasks index on
`(tenant, created_at, id)` (migration 0015): a page costs the same at any size.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import httpx
import psutil
from sqlalchemy import insert

from cluster.bench.core import DEFAULT_POSTGRES_ADMIN_URL, _admin
from cluster.bench.report import publish_report
from serve_apps.api_config import ApiConfig
from serve_apps.app import create_app
from serve_apps.passwords import hash_password
from serve_apps.rate_limit import LocalRateLimiter, RateLimit
from storage.auth_store import AuthStore
from storage.cursor import encode_cursor
from storage.database import migrate_async
from storage.messages import Attempt, RouteDecision, Task, TaskEvent, utcnow
from storage.models import tasks_table
from storage.task_store import TaskPage, TaskStore

SIZES: Final = (1_000, 100_000)
TIMED: Final = 200
WARMUP: Final = 20
TENANT: Final = "bench"
PASSWORD: Final = "a long bench password 4 the console"
GOAL_P95_MS: Final = 100.0
_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


class StorePort:
    """The reads the console's task pages make, answered by the store directly."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store

    async def list_tasks(self, **filters: Any) -> TaskPage:
        return await self.store.list_tasks(**{k: v for k, v in filters.items()
                                              if k != "status"},
                                           status=_status(filters.get("status")))

    async def get(self, task_id: str) -> Task:
        return await self.store.get_task(task_id)

    async def attempts(self, task_id: str, tenant: str | None = None) -> list[Attempt]:
        return await self.store.task_attempts(task_id, tenant)

    async def events(self, task_id: str, after_id: int = 0,
                     tenant: str | None = None) -> list[TaskEvent]:
        return await self.store.task_events(task_id, after_id, tenant)

    async def status(self) -> dict[str, Any]:
        return {"agent_types": {"calculator": {}, "text_analysis": {}}}


def _status(value: Any) -> Any:
    from storage.messages import TaskStatus

    return TaskStatus(value) if isinstance(value, str) else value


def _rows(count: int, tenant: str, start: Any) -> list[dict[str, Any]]:
    route = RouteDecision("calculator", 0.91, (("calculator", 0.91), ("text_analysis", 0.2)),
                          reason="bench").to_json()
    rows = []
    for index in range(count):
        created = start + timedelta(milliseconds=index * 10)
        rows.append({
            "id": uuid.uuid4().hex, "tenant": tenant,
            "description": f"what is {index} + {index} (bench task {index})",
            "payload": {"expression": f"{index}+{index}"}, "agent_type": "calculator",
            "status": "failed" if index % 50 == 0 else "succeeded", "priority": 0,
            "attempts": 1, "max_attempts": 3, "timeout_s": 30.0,
            "idempotency_key": f"bench-{tenant}-{index}", "batch_id": None, "route": route,
            "result": {"value": index * 2}, "error": None, "created_at": created,
            "updated_at": created, "finished_at": created + timedelta(milliseconds=5),
            "cpu_s": 0.001, "wall_s": 0.005, "callback_url": None})
    return rows


async def _fill(store: TaskStore, count: int) -> str:
    """Write the tasks; the cursor halfway down the bench tenant's list."""
    start = utcnow() - timedelta(days=2)
    halfway = ""
    for tenant, how_many in ((TENANT, count), ("other", max(count // 10, 1))):
        rows = _rows(how_many, tenant, start)
        if tenant == TENANT:
            middle = rows[len(rows) // 2]
            halfway = encode_cursor(middle["created_at"], middle["id"])
        for chunk in range(0, len(rows), 2_000):
            async with store.engine.begin() as connection:
                await connection.execute(insert(tasks_table), rows[chunk:chunk + 2_000])
    return halfway


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2), "requests": len(ordered)}


async def _time(client: httpx.AsyncClient, path: str) -> dict[str, float]:
    for _ in range(WARMUP):
        response = await client.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
    samples = []
    for _ in range(TIMED):
        began = time.perf_counter()
        response = await client.get(path)
        samples.append(time.perf_counter() - began)
        assert response.status_code == 200
    return _percentiles(samples)


async def measure(database_url: str, count: int) -> dict[str, Any]:
    """The timings at `count` tasks on `database_url` (an empty database)."""
    await migrate_async(database_url)
    store = await TaskStore.open(database_url)
    auth_store = await AuthStore.open(database_url)
    generous = RateLimit(requests=10_000_000, per_s=1.0)
    config = ApiConfig(jwt_secret=secrets.token_urlsafe(48), database_url=database_url,
                       key_rate_limit=generous, tenant_rate_limit=generous)
    limiter = LocalRateLimiter()
    try:
        began = time.perf_counter()
        halfway = await _fill(store, count)
        filled_s = time.perf_counter() - began
        await auth_store.create_user(TENANT, "operator", hash_password(PASSWORD), "operator")
        app = create_app(config, StorePort(store), auth_store, limiter)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://console.bench") as client:
            form = await client.get("/console/sign-in")
            csrf = _CSRF.search(form.text)
            assert csrf, "the sign-in page has no CSRF token"
            signed = await client.post("/console/sign-in", data={
                "csrf_token": csrf.group(1), "tenant": TENANT, "username": "operator",
                "password": PASSWORD})
            assert signed.status_code == 303, signed.text
            newest = (await store.list_tasks(tenant=TENANT, limit=1)).tasks[0].id
            result: dict[str, Any] = {
                "tasks": count, "fill_s": round(filled_s, 1),
                "list": await _time(client, "/console/tasks"),
                "list_status": await _time(client, "/console/tasks?status=failed"),
                "list_halfway": await _time(client, f"/console/tasks?cursor={halfway}"),
                "task": await _time(client, f"/console/tasks/{newest}")}
            return result
    finally:
        await limiter.close()
        await auth_store.close()
        await store.close()


async def _on_database(kind: str, admin_url: str | None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for count in SIZES:
        if kind == "sqlite":
            with tempfile.TemporaryDirectory() as state:
                results[str(count)] = await measure(f"sqlite:///{Path(state) / 'c.db'}", count)
            continue
        admin = admin_url or DEFAULT_POSTGRES_ADMIN_URL
        name = f"ymera_bench_console_{uuid.uuid4().hex[:8]}"
        try:
            await _admin(admin, f'CREATE DATABASE "{name}"')
        except Exception as exc:
            return {"skipped": f"PostgreSQL at {admin} unreachable: {exc}"}
        try:
            results[str(count)] = await measure(admin.rsplit("/", 1)[0] + "/" + name, count)
        finally:
            await _admin(admin, f'DROP DATABASE "{name}" WITH (FORCE)')
    return results


def run_console_benchmark(args: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(),
                    "memory_gb": round(psutil.virtual_memory().total / 2**30)},
        "goal": f"list p95 < {GOAL_P95_MS:g} ms at {SIZES[-1]} tasks",
        "sqlite": asyncio.run(_on_database("sqlite", None)),
        "postgresql": asyncio.run(_on_database("postgresql", args.postgres_url)),
    }
    for kind in ("sqlite", "postgresql"):
        largest = report[kind].get(str(SIZES[-1]))
        if largest:
            report[kind]["goal_met"] = largest["list"]["p95_ms"] < GOAL_P95_MS
    return publish_report(report, args, _summary)


def _summary(report: dict[str, Any]) -> str:
    lines = []
    for kind in ("sqlite", "postgresql"):
        result = report[kind]
        if "skipped" in result:
            lines.append(f"{kind}: skipped ({result['skipped']})")
            continue
        for size in SIZES:
            r = result[str(size)]
            lines.append(f"{kind} {size} tasks: list p50 {r['list']['p50_ms']} ms p95 "
                         f"{r['list']['p95_ms']} ms; task page p95 {r['task']['p95_ms']} ms")
    return "\n".join(lines)
