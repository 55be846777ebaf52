"""`ymera bench llm`: the model gateway's added latency over calling the provider directly, at
several concurrency levels, in one run.

A tiny OpenAI-compatible server (aiohttp, one fixed answer with usage, no faults) runs in a
child process on 127.0.0.1, so its work does not share this process's interpreter. Against it,
with the same OpenAI SDK client settings, at each level of `--concurrency` (default 1, 8, 32)
callers send `--requests` calls back to back through each path:

- direct: the provider client (`ml.llm.providers.OpenAIProvider.complete`), no gateway;
- gateway (memory): `LlmGateway` in this process with no database (an in-memory breaker store,
  no budget or cache): the gateway's own logic;
- gateway (sqlite): `LlmGateway` in this process with its stores on a temporary SQLite
  database, as an embedded platform runs it (breaker reads remembered for half a second, as
  the actor does), for a tenant without a budget: the usage is written in the background;
- gateway (sqlite, task): the same for a call made for a task (as the `llm` agent calls),
  whose usage is written before the answer;
- gateway (sqlite, budget): the same for a tenant with a budget: one reservation (a write
  transaction) before each call as well;
- gateway (postgres, budget): the same on a throwaway PostgreSQL database made at
  `--postgres-url` (left out when unreachable);
- actor: the real Ray actor (`LlmGatewayActor`, started as the platform starts it, on the same
  SQLite database) on a local Ray cluster of its own, called from this driver.

Each path is warmed up, then measured in two halves around the others (direct first and last),
so drift in the machine's speed weighs on all alike. Added latency is a path's p50 (p95) minus
the direct p50 (p95) at the same level. Goal: at most 3 ms added at p50 (in-process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

log = logging.getLogger("ymera.bench")

GOAL_ADDED_P50_MS: Final = 3.0
WARM_UP_PER_CALLER: Final = 5
ANSWER: Final = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Bonjour"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}
REQUEST: Final = {"tenant": "bench", "messages": [
    {"role": "user", "content": "Translate 'good morning' into French."}], "max_tokens": 16}
FOR_A_TASK: Final = {**REQUEST, "task_id": "bench-task"}
BUDGETED: Final = {**REQUEST, "tenant": "bench-budgeted"}
BUDGET_TOKENS: Final = 10**12
PATHS: Final = ("direct", "gateway_memory", "gateway_sqlite", "gateway_sqlite_task",
                 "gateway_sqlite_budget", "gateway_postgres_budget", "actor")

Call = Callable[[], Awaitable[Any]]


def _serve(ready: Any) -> None:
    """The bench's OpenAI-compatible server (runs in a child process)."""
    import json

    from aiohttp import web

    body = json.dumps(ANSWER).encode()

    async def answer(_request: web.Request) -> web.Response:
        await _request.read()
        return web.Response(body=body, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", answer)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ready.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


def latency_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Nearest-rank p50 and p95 and the mean of `seconds`, in milliseconds."""
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {"p50_ms": at(0.50), "p95_ms": at(0.95),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 3)}


async def drive(call: Call, concurrency: int, requests: int) -> list[float]:
    """`concurrency` callers making `requests` calls back to back; each call's seconds."""
    latencies: list[float] = []
    issued = 0

    async def caller() -> None:
        nonlocal issued
        while issued < requests:
            issued += 1
            sent = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - sent)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies


async def measure_level(calls: dict[str, Call], concurrency: int,
                        requests: int) -> dict[str, Any]:
    """Every path at one level: warm-ups, then halves in the order direct, others, others
    reversed, direct."""
    for call in calls.values():
        await drive(call, concurrency, WARM_UP_PER_CALLER * concurrency)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    others = [name for name in calls if name != "direct"]
    half = max(1, requests // 2)
    for name in ["direct", *others, *reversed(others), "direct"]:
        samples[name] += await drive(calls[name], concurrency, half)
    direct = latency_ms(samples["direct"])
    paths: dict[str, Any] = {}
    for name, seconds in samples.items():
        figures: dict[str, Any] = latency_ms(seconds)
        if name != "direct":
            figures["added_p50_ms"] = round(figures["p50_ms"] - direct["p50_ms"], 3)
            figures["added_p95_ms"] = round(figures["p95_ms"] - direct["p95_ms"], 3)
        paths[name] = figures
    return {"concurrency": concurrency, "requests_per_path": half * 2, **paths}


def _settings(base_url: str) -> Any:
    from ml.llm.config import LlmConfig
    from ml.llm.settings import LlmSettings

    return LlmSettings(LlmConfig.from_dict({"deployments": [
        {"name": "bench", "group": "default", "provider": "openai", "base_url": base_url,
         "model": "bench-model"}]}))


async def _measure_all(base_url: str, database_url: str, postgres_url: str | None, actor: Any,
                       levels: Sequence[int], requests: int) -> list[dict[str, Any]]:
    from ml.llm.breaker_reads import RecentBreakerReads
    from ml.llm.gateway import LlmGateway
    from ml.llm.providers import OpenAIProvider
    from ml.llm.resilience import CircuitBreaker, InMemoryBreakerStore
    from ml.llm.types import Message
    from storage.llm_breakers import SqlBreakerStore
    from storage.llm_budget import LlmBudgetStore
    from storage.llm_cache import LlmResponseCache

    settings = _settings(base_url)
    deployment = settings.config.deployments[0]
    direct = OpenAIProvider(deployment)
    messages = [Message(m["role"], m["content"]) for m in REQUEST["messages"]]  # type: ignore
    memory = LlmGateway.from_settings(settings, CircuitBreaker(InMemoryBreakerStore()))
    budgets = await LlmBudgetStore.open(database_url)
    stored = LlmGateway.from_settings(
        settings, CircuitBreaker(RecentBreakerReads(SqlBreakerStore(budgets.engine))), budgets,
        LlmResponseCache(budgets.engine))
    calls: dict[str, Call] = {
        "direct": lambda: direct.complete(messages, max_tokens=16, temperature=0.0,
                                          timeout_s=deployment.timeout_s),
        "gateway_memory": lambda: memory.complete(REQUEST),
        "gateway_sqlite": lambda: stored.complete(REQUEST),
        "gateway_sqlite_task": lambda: stored.complete(FOR_A_TASK),
        "gateway_sqlite_budget": lambda: stored.complete(BUDGETED),
    }
    await budgets.set_limit(str(BUDGETED["tenant"]), BUDGET_TOKENS)
    gateways = [memory, stored]
    stores = [budgets]
    if postgres_url is not None:
        postgres = await LlmBudgetStore.open(postgres_url)
        stores.append(postgres)
        on_postgres = LlmGateway.from_settings(
            settings, CircuitBreaker(RecentBreakerReads(SqlBreakerStore(postgres.engine))),
            postgres, LlmResponseCache(postgres.engine))
        gateways.append(on_postgres)
        await postgres.set_limit(str(BUDGETED["tenant"]), BUDGET_TOKENS)
        calls["gateway_postgres_budget"] = lambda: on_postgres.complete(BUDGETED)
    if actor is not None:
        calls["actor"] = lambda: actor.complete.remote(REQUEST)
    try:
        return [await measure_level(calls, level, requests) for level in levels]
    finally:
        await direct.aclose()
        for gateway in gateways:
            await gateway.aclose()
        for store in stores:
            await store.close()


@contextlib.contextmanager
def _postgres_database(admin_url: str) -> Iterator[str | None]:
    """A throwaway, migrated PostgreSQL database made at `admin_url` (None when unreachable),
    dropped afterwards."""
    from cluster.bench.core import _admin
    from storage.database import migrate

    name = f"ymera_bench_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # no PostgreSQL here: the path is left out, and said so
        log.warning("PostgreSQL at %s unreachable (%s): its path is left out", admin_url, exc)
        yield None
        return
    try:
        url = admin_url.rsplit("/", 1)[0] + "/" + name
        migrate(url)
        yield url
    finally:
        asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def measure(levels: Sequence[int], requests: int, postgres_admin_url: str,
            with_actor: bool = True) -> dict[str, Any]:
    """Start the server (and Ray), measure every level, stop everything; the report."""
    import ray

    from actors.ray_backend import RayBackend
    from storage.database import migrate

    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    server = context.Process(target=_serve, args=(ready,), daemon=True)
    server.start()
    try:
        base_url = f"http://127.0.0.1:{ready.get(timeout=60)}/v1"
        with tempfile.TemporaryDirectory() as state, \
                _postgres_database(postgres_admin_url) as postgres_url:
            database_url = f"sqlite:///{Path(state) / 'bench.db'}"
            migrate(database_url)
            actor = None
            if with_actor:
                ray.init(address="local", namespace="ymera-bench-llm", include_dashboard=False,
                         log_to_driver=False, logging_level=logging.WARNING)
            try:
                if with_actor:
                    actor = RayBackend("ymera-bench-llm").start_llm_gateway(
                        _settings(base_url), database_url, None, "text", "WARNING")
                    ray.get(actor.ready.remote(), timeout=120)
                results = asyncio.run(_measure_all(base_url, database_url, postgres_url, actor,
                                                   levels, requests))
            finally:
                if with_actor:
                    ray.shutdown()
    finally:
        server.kill()
        server.join(timeout=10)
    return {"suite": "llm",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "ray": ray.__version__},
            "provider": "OpenAI-compatible aiohttp server in a child process, fixed answer",
            "paths": {"direct": "the OpenAI SDK provider client, no gateway",
                      "gateway_memory": "LlmGateway in-process, no database",
                      "gateway_sqlite": "LlmGateway in-process, budget, cache and breakers "
                                        "on SQLite; a tenant without a budget",
                      "gateway_sqlite_task": "the same; a call for a task (its usage "
                                             "written before the answer)",
                      "gateway_sqlite_budget": "the same; a tenant with a budget (a "
                                               "reservation per call)",
                      "gateway_postgres_budget": "the same on PostgreSQL (left out when "
                                                 "unreachable)",
                      "actor": "the Ray actor on the same SQLite, called from the driver; a "
                               "tenant without a budget"},
            "levels": results, "goal": _goal(results),
            "seconds": round(time.perf_counter() - started, 1)}


def _goal(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """Each gateway path's worst added p50 over the levels, and whether it meets the goal."""
    paths = [name for name in PATHS if name != "direct" and name in levels[0]]
    worst = {name: max(level[name]["added_p50_ms"] for level in levels) for name in paths}
    return {"goal": f"added p50 <= {GOAL_ADDED_P50_MS:g} ms at every level",
            "worst_added_p50_ms": worst,
            "met": {name: value <= GOAL_ADDED_P50_MS for name, value in worst.items()}}


def run_llm_benchmark(args: Any) -> dict[str, Any]:
    """Measure, then print the table (or the JSON report with `--json`)."""
    from cluster.bench.report import publish_report
    from storage.errors import InvalidRequest

    try:
        levels = tuple(int(part) for part in args.concurrency.split(",") if part.strip())
    except ValueError:
        levels = ()
    if not levels or min(levels) < 1:
        raise InvalidRequest(f"concurrency must be comma-separated positive integers, not "
                             f"{args.concurrency!r}", {"concurrency": args.concurrency})
    if args.requests < 2:
        raise InvalidRequest("requests must be at least 2", {"requests": args.requests})
    from cluster.bench.core import DEFAULT_POSTGRES_ADMIN_URL

    report = measure(levels, args.requests, args.postgres_url or DEFAULT_POSTGRES_ADMIN_URL)
    return publish_report(report, args, summary)


def summary(report: dict[str, Any]) -> str:
    rows = [f"{'conc':>4}  {'path':<15} {'p50 ms':>8} {'p95 ms':>8} {'+p50 ms':>8} "
            f"{'+p95 ms':>8}"]
    for level in report["levels"]:
        for name in PATHS:
            if name not in level:
                continue
            figures = level[name]
            rows.append(f"{level['concurrency']:>4}  {name:<15} {figures['p50_ms']:>8.2f} "
                        f"{figures['p95_ms']:>8.2f} {figures.get('added_p50_ms', 0.0):>8.2f} "
                        f"{figures.get('added_p95_ms', 0.0):>8.2f}")
    goal = report["goal"]
    verdicts = ", ".join(f"{name} {'met' if goal['met'][name] else 'missed'} "
                         f"(worst {value} ms)" for name, value in goal["worst_added_p50_ms"].items())
    rows.append(f"goal {goal['goal']}: {verdicts}; {report['seconds']} s")
    return "\n".join(rows)
