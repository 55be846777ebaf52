"""`ymera bench webhooks`: how fast events go out, and what webhooks cost the core path, in one
run.

A small aiohttp receiver runs in a child process on 127.0.0.1 (so its work does not share this
process's interpreter); it answers 200 at once and notes, for every request, the time it
arrived less the event's `timestamp` (taken when the event's transaction commits): the latency
from event commit to receipt. Measured, in order:

- outbox, per database (SQLite, and PostgreSQL at `--postgres-url` when reachable): the delivery
  loop (`actors.webhook_delivery.DeliveryLoop`) in this process, as the actor runs it:
  `burst`: `--deliveries` events committed in transactions of 100, then sent: deliveries per
  second, and commit → receipt latency under that backlog; `paced`: events committed one at a
  time, 20 per second, the loop woken after each commit as the orchestrator wakes the actor:
  commit → receipt latency when the outbox is idle;
- platform (a local Ray cluster of its own, SQLite): `--deliveries` calculator tasks, first
  without any subscription (the core path), then with one subscription to every task event:
  tasks per second both ways, deliveries per second and commit → receipt latency. Left out,
  with the reason, when the platform does not turn task events into deliveries.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from cluster.bench.core import DEFAULT_POSTGRES_ADMIN_URL, _admin
from cluster.bench.report import publish_report

log = logging.getLogger("ymera.bench")

BURST_COMMIT: Final = 100
PACED_EVENTS: Final = 200
PACED_PER_SECOND: Final = 20.0
PLATFORM_TIMEOUT_S: Final = 600.0


def _serve(ready: Any) -> None:
    """The bench's receiver (runs in a child process): POST /hook notes each event's latency;
    GET /stats answers them and forgets them."""
    import json

    from aiohttp import web

    latencies: list[float] = []

    async def hook(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        latencies.append(time.time() - datetime.fromisoformat(body["timestamp"]).timestamp())
        return web.Response(status=200)

    async def stats(_request: web.Request) -> web.Response:
        answer = web.json_response({"received": len(latencies), "latencies_s": latencies[:]})
        latencies.clear()
        return answer

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hook", hook)
        app.router.add_get("/stats", stats)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ready.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


class ReceiverProcess:
    """The receiver's child process, its URL, and what it received since the last `take`."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        ready = context.Queue()
        self.process = context.Process(target=_serve, args=(ready,), daemon=True)
        self.process.start()
        self.port = int(ready.get(timeout=60))
        self.url = f"http://127.0.0.1:{self.port}/hook"

    async def take(self) -> tuple[int, list[float]]:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{self.port}/stats") as response:
                stats = await response.json()
        return int(stats["received"]), [float(s) for s in stats["latencies_s"]]

    async def wait_for(self, count: int, timeout_s: float,
                       idle_s: float = 15.0) -> tuple[int, list[float], float]:
        """Collect until `count` requests arrived, `timeout_s` passed or none came for
        `idle_s`; (received, latencies, seconds until the last one arrived)."""
        started = last = time.perf_counter()
        received, latencies = 0, list[float]()
        while (received < count and time.perf_counter() - started < timeout_s
               and time.perf_counter() - last < idle_s):
            await asyncio.sleep(0.02)
            more, seconds = await self.take()
            if more:
                last = time.perf_counter()
            received, latencies = received + more, latencies + seconds
        return received, latencies, last - started

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)


def latency_ms(seconds: Sequence[float]) -> dict[str, float] | None:
    """Nearest-rank p50 and p95 and the maximum of `seconds`, in milliseconds."""
    if not seconds:
        return None
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "max_ms": round(ordered[-1] * 1000, 1)}


async def _commit(store: Any, tenant: str, count: int, first: int) -> None:
    from storage.messages import utcnow
    from storage.webhook_outbox import Notification, enqueue

    async with store.engine.begin() as connection:
        await enqueue(connection, [
            Notification(tenant, "task.succeeded", {"task_id": f"{first + n:032x}",
                                                     "status": "succeeded"},
                         task_id=f"{first + n:032x}", agent_type="calculator")
            for n in range(count)], utcnow())


async def outbox(database_url: str, receiver: ReceiverProcess, deliveries: int,
                 paced_events: int = PACED_EVENTS) -> dict[str, Any]:
    """The delivery loop alone over `database_url` (see the module)."""
    from actors.config import WebhookSettings
    from actors.webhook_delivery import DeliveryLoop
    from actors.webhook_sender import DestinationPolicy, WebhookSender
    from storage.database import migrate_async
    from storage.webhook_store import WebhookStore

    await migrate_async(database_url)
    settings = WebhookSettings(allowed_networks=("127.0.0.1/32",))
    sender = WebhookSender(DestinationPolicy.from_settings(False, settings.allowed_networks),
                           settings.timeout_s)
    async with await WebhookStore.open(database_url) as store:
        await store.create_subscription("bench", receiver.url, ["task.*"])
        loop = DeliveryLoop(store, sender, settings)
        running = asyncio.create_task(loop.run())
        try:
            await _commit(store, "bench", 20, 10**9)  # warm-up
            await receiver.wait_for(20, 60)
            for first in range(0, deliveries, BURST_COMMIT):
                await _commit(store, "bench", min(BURST_COMMIT, deliveries - first), first)
            loop.wake()
            received, burst, elapsed = await receiver.wait_for(deliveries, 600)
            paced: list[float] = []
            for n in range(paced_events):
                await _commit(store, "bench", 1, 2 * 10**9 + n)
                loop.wake()
                await asyncio.sleep(1 / PACED_PER_SECOND)
            paced_received, paced, _ = await receiver.wait_for(paced_events, 60)
        finally:
            await loop.stop()
            running.cancel()
            await sender.close()
    return {"database": database_url.split(":", 1)[0],
            "burst": {"deliveries": deliveries, "received": received,
                      "seconds": round(elapsed, 3),
                      "deliveries_per_second": round(received / elapsed, 1),
                      "commit_to_receipt": latency_ms(burst)},
            "paced": {"events": paced_events, "per_second": PACED_PER_SECOND,
                      "received": paced_received, "commit_to_receipt": latency_ms(paced)}}


def platform(receiver: ReceiverProcess, tasks: int) -> dict[str, Any]:
    """Calculator tasks on a local platform without and with a subscription (see the module)."""
    import ray

    from actors.config import OrchestratorConfig, PoolConfig, WebhookSettings
    from actors.deploy import start_orchestrator
    from actors.ray_backend import RayBackend
    from cluster.client import Client
    from ml.config import RouterConfig
    from storage.database import migrate
    from storage.messages import TaskRequest
    from storage.webhook_store import WebhookStore

    ray.init(address="local", namespace="ymera-bench-webhooks", include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING)
    try:
        with tempfile.TemporaryDirectory() as state:
            url = f"sqlite:///{Path(state) / 'bench.db'}"
            migrate(url)
            webhooks = WebhookSettings(allowed_networks=("127.0.0.1/32",))
            config = OrchestratorConfig(
                database_url=url, namespace=f"ymera-bench-{uuid.uuid4().hex[:8]}",
                default_replicas=0, pools={"calculator": PoolConfig(replicas=2, concurrency=64)},
                router=RouterConfig(enabled=False), webhooks=webhooks)
            orchestrator = start_orchestrator(config)
            # started here too in case the orchestrator does not start it (same named actor)
            delivery = RayBackend(config.namespace).start_webhook_delivery(
                webhooks, url, "json", "WARNING")
            try:
                ray.get([orchestrator.ready.remote(), delivery.ready.remote()], timeout=180)
                client = Client(orchestrator)

                def run(count: int, offset: int) -> float:
                    started = time.perf_counter()
                    ids = client.submit_many([
                        TaskRequest(f"{i}+1", {"expression": f"{i}+1"}, "calculator")
                        for i in range(offset, offset + count)])
                    client.wait_many(ids, PLATFORM_TIMEOUT_S)
                    return time.perf_counter() - started

                run(100, 0)  # warm-up
                core = run(tasks, 100)

                async def subscribe() -> None:
                    async with await WebhookStore.open(url) as store:
                        await store.create_subscription("default", receiver.url, ["task.*"])

                asyncio.run(subscribe())
                with_webhooks = run(tasks, 100 + tasks)
                received, latencies, waited = asyncio.run(receiver.wait_for(tasks, 120))
            finally:
                ray.get(orchestrator.stop_pools.remote(), timeout=60)
                ray.kill(orchestrator, no_restart=True)
                ray.kill(delivery, no_restart=True)
    finally:
        ray.shutdown()
    report: dict[str, Any] = {
        "tasks": tasks,
        "core_tasks_per_second": round(tasks / core, 1),
        "with_webhooks_tasks_per_second": round(tasks / with_webhooks, 1),
        "received": received,
    }
    if received == 0:
        report["skipped"] = ("no delivery arrived: the platform does not turn task events "
                             "into webhook deliveries (the orchestrator's outbox writes are "
                             "not wired)")
        return report
    report["deliveries_per_second"] = round(received / (with_webhooks + waited), 1)
    report["commit_to_receipt"] = latency_ms(latencies)
    return report


def run_webhooks_benchmark(args: Any) -> dict[str, Any]:
    deliveries = args.deliveries
    receiver = ReceiverProcess()
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}}
    try:
        with tempfile.TemporaryDirectory() as state:
            report["outbox_sqlite"] = asyncio.run(
                outbox(f"sqlite:///{Path(state) / 'outbox.db'}", receiver, deliveries))
        admin = args.postgres_url or DEFAULT_POSTGRES_ADMIN_URL
        name = f"ymera_bench_{uuid.uuid4().hex[:8]}"
        try:
            asyncio.run(_admin(admin, f'CREATE DATABASE "{name}"'))
        except Exception as exc:
            report["outbox_postgresql"] = {"skipped": f"PostgreSQL at {admin} unreachable: "
                                                      f"{exc}"}
        else:
            try:
                report["outbox_postgresql"] = asyncio.run(
                    outbox(admin.rsplit("/", 1)[0] + "/" + name, receiver, deliveries))
            finally:
                asyncio.run(_admin(admin, f'DROP DATABASE "{name}" WITH (FORCE)'))
        report["platform"] = platform(receiver, deliveries)
    finally:
        receiver.stop()
    return publish_report(report, args, _summary)


def _latency(figures: dict[str, float] | None) -> str:
    if figures is None:
        return "none received"
    return f"p50 {figures['p50_ms']:g} ms, p95 {figures['p95_ms']:g} ms"


def _summary(report: dict[str, Any]) -> str:
    lines = []
    for key in ("outbox_sqlite", "outbox_postgresql"):
        result = report[key]
        if "skipped" in result:
            lines.append(f"{key}: skipped ({result['skipped']})")
            continue
        burst, paced = result["burst"], result["paced"]
        lines.append(
            f"{key}: {burst['deliveries_per_second']:.0f} deliveries/s "
            f"({burst['received']}/{burst['deliveries']}), commit→receipt under a backlog "
            f"{_latency(burst['commit_to_receipt'])}, when idle "
            f"{_latency(paced['commit_to_receipt'])}")
    result = report["platform"]
    line = (f"platform: core {result['core_tasks_per_second']:.0f} tasks/s, with a "
            f"subscription {result['with_webhooks_tasks_per_second']:.0f} tasks/s")
    if "skipped" in result:
        line += f"; deliveries skipped ({result['skipped']})"
    else:
        line += (f", {result['deliveries_per_second']:.0f} deliveries/s, commit→receipt "
                 f"{_latency(result['commit_to_receipt'])}")
    lines.append(line)
    return "\n".join(lines)
