"""`ymera bench api`: the platform's authenticated task submission against a bare Serve
FastAPI endpoint deployed with the same settings, in one run.

It starts one local Ray cluster, a platform on a temporary SQLite database (a calculator pool,
routing off, so each submission names its agent type) and, on one Serve HTTP proxy on
127.0.0.1, two applications with the same deployment options (`max_ongoing_requests`,
`num_cpus`, replicas, placement):
- bare: `POST /bare-bench/bare`, an async handler that answers a small JSON object;
- platform: the whole API (`deploy_api`), measured on `POST /api/v1/tasks` with an API key of
  the submitter role and no `wait`, so each request is authenticated, rate-limited (limits
  raised so they never refuse), committed and answered 202 without waiting for the task.

A load generator in this process (one `httpx.AsyncClient`, HTTP/1.1 with keep-alive, as many
connections as concurrent callers) sends the same JSON body to both. At each concurrency level
it warms both up, then runs bare, platform, platform, bare, each for half of the requests (or
of the duration), so that drift in the machine's speed weighs on both alike; before each bare
half it waits until the platform has run the tasks already accepted, so their execution is not
charged to the bare endpoint. Rates count 2xx answers per second; latencies are those of 2xx
answers; anything else is an error, counted by status.

Goals: at every level, submission at least 0.7x the bare rate; at 32 concurrent callers, a
submission p95 under 50 ms, and within 1.5x the bare endpoint's p95 of the same run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import secrets
import socket
import statistics
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import psutil
import ray
from fastapi import FastAPI
from ray import serve

from actors.config import OrchestratorConfig, PoolConfig
from actors.deploy import start_orchestrator
from cluster.bench.report import publish_report
from cluster.client import Client
from ml.config import RouterConfig
from serve_apps.api_config import ApiConfig
from serve_apps.api_keys import key_text, new_key_secret
from serve_apps.deployment import (
    HEAD_NODE_RESOURCE, MAX_ONGOING_REQUESTS, deploy_api,
)
from serve_apps.rate_limit import RateLimit
from storage.auth_store import AuthStore
from storage.database import migrate
from storage.errors import InvalidRequest

HOST: Final = "127.0.0.1"
BARE_APP: Final = "ymera-bench-bare"
BARE_PREFIX: Final = "/bare-bench"
BARE_PATH: Final = f"{BARE_PREFIX}/bare"
PLATFORM_APP: Final = "ymera-bench-api"
SUBMIT_PATH: Final = "/api/v1/tasks"
TENANT: Final = "bench"
BODY: Final = {"description": "1+1", "agent_type": "calculator",
               "payload": {"expression": "1+1"}}
UNLIMITED: Final = RateLimit(requests=10**6, per_s=1.0)
DEFAULT_CONCURRENCY: Final = (1, 8, 32)
GOAL_RATIO: Final = 0.7
GOAL_P95_MS: Final = 50.0
GOAL_P95_VS_BARE: Final = 1.5
GOAL_P95_CONCURRENCY: Final = 32
WARM_UP_PER_CALLER: Final = 4
MIN_WARM_UP: Final = 20
DRAIN_TIMEOUT_S: Final = 120.0
REQUEST_TIMEOUT_S: Final = 30.0


def _bare_app() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/bare")
    async def bare() -> dict[str, str]:
        return {"status": "accepted"}

    return app


@serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class BareIngress:
    """The baseline: a FastAPI app with one async route and nothing behind it."""

    def __serve_build_asgi_app__(self) -> FastAPI:
        return _bare_app()


def concurrency_levels(text: str) -> tuple[int, ...]:
    """`"1,8,32"` as `(1, 8, 32)`; `InvalidRequest` unless every level is a positive integer."""
    try:
        levels = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InvalidRequest(f"concurrency must be comma-separated integers, not {text!r}",
                             {"concurrency": text}) from None
    if not levels or min(levels) < 1:
        raise InvalidRequest(f"concurrency levels must be at least 1, not {text!r}",
                             {"concurrency": text})
    return levels


@dataclass
class Run:
    """What one endpoint answered over one or more timed halves."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def report(self) -> dict[str, Any]:
        answered = len(self.latencies)
        result: dict[str, Any] = {
            "requests": answered + sum(self.errors.values()),
            "ok": answered,
            "errors": sum(self.errors.values()),
            "error_statuses": dict(self.errors),
            "seconds": round(self.seconds, 3),
            "requests_per_second": round(answered / self.seconds, 1) if self.seconds else 0.0,
        }
        result.update(latency_ms(self.latencies))
        return result


def latency_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    """Nearest-rank percentiles and the mean of `seconds`, in milliseconds (None when empty)."""
    if not seconds:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None}
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 2)}


Send = Callable[[], Awaitable[httpx.Response]]


async def drive(send: Send, concurrency: int, run: Run, *, requests: int | None = None,
                duration_s: float | None = None) -> None:
    """`concurrency` callers sending back to back until `requests` are sent or `duration_s`
    has passed; adds the answers and the elapsed time to `run`."""
    issued = 0
    started = time.perf_counter()
    deadline = started + duration_s if duration_s is not None else None

    async def caller() -> None:
        nonlocal issued
        while True:
            if deadline is not None:
                if time.perf_counter() >= deadline:
                    return
            elif issued >= (requests or 0):
                return
            issued += 1
            sent = time.perf_counter()
            try:
                response = await send()
            except httpx.HTTPError as exc:
                run.errors[type(exc).__name__] += 1
                continue
            if 200 <= response.status_code < 300:
                run.latencies.append(time.perf_counter() - sent)
            else:
                run.errors[str(response.status_code)] += 1

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    run.seconds += time.perf_counter() - started


async def measure_level(base_url: str, api_key: str, concurrency: int, requests: int,
                        duration_s: float | None,
                        drain: Callable[[], Awaitable[float]]) -> dict[str, Any]:
    """Both endpoints at one concurrency level, in the order bare, platform, platform, bare."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=REQUEST_TIMEOUT_S,
                                 http1=True, http2=False) as http:
        sends: dict[str, Send] = {
            "bare": lambda: http.post(BARE_PATH, json=BODY),
            "platform": lambda: http.post(SUBMIT_PATH, json=BODY,
                                          headers={"X-API-Key": api_key}),
        }
        warm_up = max(MIN_WARM_UP, WARM_UP_PER_CALLER * concurrency)
        for send in sends.values():
            await drive(send, concurrency, Run(), requests=warm_up)
        drained_s = await drain()
        runs = {name: Run() for name in sends}
        half_requests = max(1, requests // 2)
        half_duration = duration_s / 2 if duration_s is not None else None
        for name in ("bare", "platform", "platform", "bare"):
            if name == "bare":
                drained_s += await drain()
            await drive(sends[name], concurrency, runs[name], requests=half_requests,
                        duration_s=half_duration)
    bare, submitted = runs["bare"].report(), runs["platform"].report()
    ratio = (submitted["requests_per_second"] / bare["requests_per_second"]
             if bare["requests_per_second"] else 0.0)
    return {"concurrency": concurrency, "warm_up_requests_per_endpoint": warm_up,
            "bare": bare, "platform": submitted, "ratio": round(ratio, 3),
            "meets_ratio_goal": ratio >= GOAL_RATIO, "backlog_drain_seconds": round(drained_s, 2)}


def goals(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goals, each with its figure and whether it was met (None: not measured)."""
    at_goal_level = [level for level in levels if level["concurrency"] == GOAL_P95_CONCURRENCY]
    p95 = at_goal_level[0]["platform"]["p95_ms"] if at_goal_level else None
    bare_p95 = at_goal_level[0]["bare"]["p95_ms"] if at_goal_level else None
    p95_ratio = round(p95 / bare_p95, 2) if p95 is not None and bare_p95 else None
    return {
        "ratio": {"goal": f"platform >= {GOAL_RATIO} x bare at every level",
                  "worst": min(level["ratio"] for level in levels),
                  "met": all(level["meets_ratio_goal"] for level in levels)},
        "p95": {"goal": f"platform p95 < {GOAL_P95_MS:g} ms at {GOAL_P95_CONCURRENCY} "
                        "concurrent", "p95_ms": p95,
                "met": None if p95 is None else p95 < GOAL_P95_MS},
        "p95_vs_bare": {"goal": f"platform p95 <= {GOAL_P95_VS_BARE:g} x the bare p95 at "
                                f"{GOAL_P95_CONCURRENCY} concurrent (same run)",
                        "ratio": p95_ratio,
                        "met": None if p95_ratio is None else p95_ratio <= GOAL_P95_VS_BARE},
    }


# The cluster side: platform, key, deployments.

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


async def _create_key(database_url: str) -> str:
    async with await AuthStore.open(database_url) as store:
        secret, hashed = new_key_secret()
        record = await store.create_api_key(TENANT, "bench", "submitter", hashed)
        return key_text(record.id, secret)


def _actor_options(database_url: str) -> dict[str, Any]:
    """Those `build_api` gives the API's replicas."""
    options: dict[str, Any] = {"num_cpus": 0}
    if database_url.startswith("sqlite"):
        options["resources"] = dict(HEAD_NODE_RESOURCE)
    return options


def _deploy_bare(port: int, replicas: int, database_url: str, timeout_s: float = 60.0) -> str:
    serve.start(http_options={"host": HOST, "port": port})
    # mypy keeps a decorated class's own type (python/mypy#3135); `BareIngress` is a Deployment
    serve.run(BareIngress.options(num_replicas=replicas,  # type: ignore[attr-defined]
                                  ray_actor_options=_actor_options(database_url)).bind(),
              name=BARE_APP, route_prefix=BARE_PREFIX, blocking=False)
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        request = urllib.request.Request(url + BARE_PATH, data=json.dumps(BODY).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=2.0) as response:
                if response.status == 200:
                    return url
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the bare endpoint did not answer at {url}{BARE_PATH} "
                       f"within {timeout_s:g}s")


def _drainer(client: Client, timeout_s: float = DRAIN_TIMEOUT_S) -> Callable[[], Awaitable[float]]:
    async def drain() -> float:
        started = time.perf_counter()
        while time.perf_counter() - started < timeout_s:
            status = await asyncio.to_thread(client.status)
            if not sum(status["queued"].values()) and not status["running"]:
                break
            await asyncio.sleep(0.05)
        return time.perf_counter() - started

    return drain


def measure(levels: Sequence[int], requests: int, duration_s: float | None,
            replicas: int) -> dict[str, Any]:
    """Start everything, measure every level, tear everything down; the report."""
    started = time.perf_counter()
    # its own cluster, never a running one
    ray.init(address="local", namespace="ymera-bench-api", include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING)
    try:
        with tempfile.TemporaryDirectory() as state:
            database_url = f"sqlite:///{Path(state) / 'bench.db'}"
            migrate(database_url)
            config = OrchestratorConfig(
                database_url=database_url, namespace=f"ymera-bench-{uuid.uuid4().hex[:8]}",
                default_replicas=0, pools={"calculator": PoolConfig(replicas=1, concurrency=64)},
                router=RouterConfig(enabled=False))
            orchestrator = start_orchestrator(config)
            try:
                ray.get(orchestrator.ready.remote(), timeout=180)
                client = Client(orchestrator)
                api_key = asyncio.run(_create_key(database_url))
                api_config = ApiConfig(jwt_secret=secrets.token_urlsafe(48),
                                       namespace=config.namespace, database_url=database_url,
                                       key_rate_limit=UNLIMITED, tenant_rate_limit=UNLIMITED)
                port = _free_port()
                try:
                    base_url = _deploy_bare(port, replicas, database_url)
                    deploy_api(api_config, host=HOST, port=port, replicas=replicas,
                               name=PLATFORM_APP)
                    results = [asyncio.run(measure_level(base_url, api_key, level, requests,
                                                         duration_s, _drainer(client)))
                               for level in levels]
                    recorded = client.status()["tasks"]
                finally:
                    for name in (BARE_APP, PLATFORM_APP):  # Serve itself ends with this Ray
                        if name in serve.status().applications:
                            serve.delete(name)
            finally:
                ray.get(orchestrator.stop_pools.remote(), timeout=60)
                ray.kill(orchestrator, no_restart=True)
    finally:
        ray.shutdown()
    return {
        "suite": "api",
        "machine": {"cpus": os.cpu_count(),
                    "memory_gb": round(psutil.virtual_memory().total / 2**30),
                    "python": platform.python_version(), "ray": ray.__version__},
        "serve": {"host": HOST, "replicas": replicas,
                  "max_ongoing_requests": MAX_ONGOING_REQUESTS, "num_cpus": 0,
                  "bare": f"POST {BARE_PATH}",
                  "platform": f"POST {SUBMIT_PATH} (API key, submitter role, no wait: 202)"},
        "load": {"client": f"httpx {httpx.__version__} AsyncClient, HTTP/1.1 keep-alive",
                 "per_endpoint_and_level": ({"duration_s": duration_s} if duration_s is not None
                                            else {"requests": max(1, requests // 2) * 2}),
                 "order": "bare, platform, platform, bare"},
        "storage": {"database": "sqlite", "tasks_by_status": recorded},
        "levels": results,
        "goals": goals(results),
        "seconds": round(time.perf_counter() - started, 1),
    }


def run_api_benchmark(args: Any) -> dict[str, Any]:
    """Measure, then print the summary (or the JSON report with `--json`); `--output` also
    writes the JSON report to a file."""
    levels = concurrency_levels(args.concurrency)
    if args.requests < 2:
        raise InvalidRequest("requests must be at least 2", {"requests": args.requests})
    if args.duration is not None and args.duration <= 0:
        raise InvalidRequest("duration must be positive", {"duration": args.duration})
    report = measure(levels, args.requests, args.duration, args.api_replicas)
    return publish_report(report, args, summary)


def summary(report: dict[str, Any]) -> str:
    def met(flag: bool | None) -> str:
        return "not measured" if flag is None else "met" if flag else "missed"

    serve_info, machine = report["serve"], report["machine"]
    header = (f"{machine['cpus']} CPUs, ray {machine['ray']}; {serve_info['replicas']} replica(s) "
              f"each, max_ongoing_requests {serve_info['max_ongoing_requests']}; "
              f"{report['seconds']} s")
    columns = (f"{'conc':>4}  {'endpoint':<8} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
               f"{'p99 ms':>8} {'errors':>6}  ratio")
    rows = []
    for level in report["levels"]:
        for name in ("bare", "platform"):
            side = level[name]
            ratio = f"{level['ratio']:.3f}" if name == "platform" else ""
            rows.append(f"{level['concurrency']:>4}  {name:<8} {side['requests_per_second']:>8.1f} "
                        f"{_ms(side['p50_ms'])} {_ms(side['p95_ms'])} {_ms(side['p99_ms'])} "
                        f"{side['errors']:>6}  {ratio}")
    goal = report["goals"]
    footer = [f"goal {goal['ratio']['goal']}: {met(goal['ratio']['met'])} "
              f"(worst {goal['ratio']['worst']:.3f})",
              f"goal {goal['p95']['goal']}: {met(goal['p95']['met'])}"
              + (f" ({goal['p95']['p95_ms']} ms)" if goal["p95"]["p95_ms"] is not None else ""),
              f"goal {goal['p95_vs_bare']['goal']}: {met(goal['p95_vs_bare']['met'])}"
              + (f" ({goal['p95_vs_bare']['ratio']}x)"
                 if goal["p95_vs_bare"]["ratio"] is not None else "")]
    return "\n".join([header, columns, *rows, *footer])


def _ms(value: float | None) -> str:
    return f"{'-':>8}" if value is None else f"{value:>8.1f}"
