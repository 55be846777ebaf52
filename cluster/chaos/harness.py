"""One chaos run, from nothing to a report, leaving nothing behind.

`run(options)` starts a private PostgreSQL and Redis (free ports), a fault proxy in front of
each, and a platform of its own (its own Ray head on free ports, a state directory of its own,
the HTTP API unless switched off) that reaches storage only through the proxies. When
`worker_node_removal` is among the fault kinds, the platform's cluster has a worker node too
(`cluster.chaos.worker_node`): a second raylet on loopback that alone offers the resource the
`NODE_POOL` pool's replicas ask for, so they run there. It then runs
the load and the seeded fault schedule for `duration_s`, stops the load (clients still retry
their last key for `give_up_s`), heals the network, waits up to `settle_s` for every
acknowledged task and run to finish, and checks (`cluster.chaos.checker`). Whatever happens,
it stops what it started: the platform (`cluster.platform.down`: only its own head), the
proxies and the private servers. Shared services and other Ray clusters are never touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from actors.config import PoolConfig
from cluster.chaos.checker import check, wait_settled
from cluster.chaos.faults import (
    NETWORK_KINDS, NODE_KINDS, PROCESS_KINDS, SERVE_KINDS, STORAGE_KINDS, Fault, FaultInjector,
    Targets, schedule,
)
from cluster.chaos.load import TENANTS, LoadRecord, LoadWorker, client_submitter, http_submitter
from cluster.chaos.proxy import FaultProxy
from cluster.chaos.services import PrivatePostgres, PrivateRedis, free_port
from cluster.chaos.worker_node import RESOURCE, JoinWhenUp, WorkerNode, WorkerNodes

log = logging.getLogger(__name__)

POOLS = {"calculator": 2, "data_processor": 1, "text_analysis": 1}
NODE_POOL = "data_processor"
NODE_POOL_REPLICAS = 2
"""On a multi-node platform, this pool's replicas run on the worker node (and only there)."""


@dataclasses.dataclass(frozen=True)
class ChaosOptions:
    duration_s: float = 120.0
    seed: int = 1
    api: bool = True
    kinds: tuple[str, ...] | None = None  # None: every kind the platform has
    python_clients: int = 2
    http_clients: int = 1
    settle_s: float = 180.0
    give_up_s: float = 60.0

    def fault_kinds(self) -> tuple[str, ...]:
        if self.kinds is not None:
            if not self.api and set(self.kinds) & set(SERVE_KINDS):
                raise ValueError(f"{', '.join(SERVE_KINDS)} need the HTTP API (drop --no-api)")
            return self.kinds
        return (PROCESS_KINDS + (SERVE_KINDS if self.api else ()) + STORAGE_KINDS
                + NETWORK_KINDS + NODE_KINDS)


@dataclasses.dataclass
class Platform:
    settings: Any
    client: Any
    api_url: str | None
    postgres: PrivatePostgres
    redis: PrivateRedis
    postgres_proxy: FaultProxy
    redis_proxy: FaultProxy
    worker_nodes: WorkerNodes | None


def run(options: ChaosOptions, progress: Callable[[str], None] = log.info) -> dict[str, Any]:
    kinds = options.fault_kinds()
    plan = schedule(options.seed, options.duration_s, kinds)
    with private_platform(options.api, progress,
                          worker_node=bool(set(kinds) & set(NODE_KINDS))) as platform:
        record = LoadRecord()
        stop = threading.Event()
        workers = _workers(options, platform, record, stop)
        targets = Targets(platform.client.orchestrator, platform.settings.namespace,
                          f"http://127.0.0.1:{platform.settings.dashboard_port}",
                          platform.postgres, platform.redis, platform.postgres_proxy,
                          platform.redis_proxy, platform.worker_nodes)
        injector = FaultInjector(targets, options.seed)
        progress(f"load: {len(workers)} clients; {len(plan)} faults over "
                 f"{options.duration_s:g}s (seed {options.seed})")
        started = time.time()
        for worker in workers:
            worker.start()
        faults = _inject(plan, injector, started, options.duration_s, progress)
        remaining = started + options.duration_s - time.time()
        if remaining > 0:
            time.sleep(remaining)
        stop.set()
        for worker in workers:
            worker.give_up_at = time.time() + options.give_up_s
        for worker in workers:
            worker.join(timeout=options.give_up_s + 30)
        for proxy in (platform.postgres_proxy, platform.redis_proxy):
            proxy.heal()
        progress(f"load stopped after {time.time() - started:.0f}s: {len(record.acks)} "
                 "acknowledged; waiting for every one to finish")
        settled = wait_settled(platform.postgres.url, record, options.settle_s)
        report = check(platform.postgres.url, record, faults, started)
    report = {"seed": options.seed, "duration_s": options.duration_s,
              "fault_kinds": list(kinds), "settled_in_s": round(settled, 1), **report}
    missing = sorted(set(kinds) - set(report["faults_injected"]))
    report["fault_kinds_not_injected"] = missing
    report["passed"] = report["lost"] == 0 and report["duplicated"] == 0
    return report


def _workers(options: ChaosOptions, platform: Platform, record: LoadRecord,
             stop: threading.Event) -> list[LoadWorker]:
    python = client_submitter(platform.client)
    workers = [LoadWorker(f"py{i}", "python", options.seed * 1000 + i, python, record, stop)
               for i in range(options.python_clients)]
    if platform.api_url and options.http_clients:
        keys = _api_keys(platform.postgres.url)
        http = http_submitter(platform.api_url, keys)
        workers += [LoadWorker(f"http{i}", "http", options.seed * 1000 + 100 + i, http, record,
                               stop) for i in range(options.http_clients)]
    return workers


def _api_keys(database_url: str) -> dict[str, str]:
    from cluster.admin import create_key

    return {tenant: create_key(database_url, tenant, "chaos-load", "submitter")["key"]
            for tenant in TENANTS}


def _inject(plan: list[tuple[float, str]], injector: FaultInjector, started: float,
            duration_s: float, progress: Callable[[str], None]) -> list[Fault]:
    """Land the planned faults at their offsets; one that does not land is tried again a few
    seconds later (up to three times) while the fault window lasts."""
    pending = [(offset, kind, 0) for offset, kind in plan]
    last_offset = max((offset for offset, _ in plan), default=0.0)
    faults: list[Fault] = []
    while pending:
        pending.sort()
        offset, kind, tries = pending.pop(0)
        delay = started + offset - time.time()
        if delay > 0:
            time.sleep(delay)
        fault = injector.inject(kind)
        faults.append(fault)
        progress(f"  {time.time() - started:6.1f}s  {kind:<20} "
                 f"{fault.target if fault.injected else 'did not land: ' + str(fault.error)}")
        retry_at = max(offset, time.time() - started) + 5  # never at once after a slow fault
        if not fault.injected and tries < 3 and retry_at <= max(last_offset, duration_s - 10):
            pending.append((retry_at, kind, tries + 1))
    return faults


@contextlib.contextmanager
def private_platform(api: bool, progress: Callable[[str], None],
                     worker_node: bool = False) -> Iterator[Platform]:
    """The platform on private storage behind proxies (with a worker node hosting `NODE_POOL`
    if asked); everything stopped afterwards."""
    from cluster.platform import client as platform_client
    from cluster.platform import down

    state = Path(tempfile.mkdtemp(prefix="ymera-chaos-"))
    postgres = PrivatePostgres.create()
    redis = PrivateRedis(state / "redis")
    proxies: list[FaultProxy] = []
    settings = None
    nodes: WorkerNodes | None = None
    try:
        postgres.start()
        redis.start()
        postgres_proxy = FaultProxy("127.0.0.1", postgres.port).start()
        redis_proxy = FaultProxy("127.0.0.1", redis.port).start()
        proxies = [postgres_proxy, redis_proxy]
        progress(f"starting a private platform (PostgreSQL :{postgres.port} via "
                 f":{postgres_proxy.port}, Redis :{redis.port} via :{redis_proxy.port})")
        settings, started, nodes = _up(postgres.url_at(postgres_proxy.port),
                                       redis.url_at(redis_proxy.port), state, api, worker_node,
                                       progress)
        node = (f", worker node :{nodes.current.node_manager_port} ({NODE_POOL})"
                if nodes and nodes.current else "")
        progress(f"platform up: Ray {started.ray_address}{node}, API "
                 f"{started.api_url or 'off'}")
        yield Platform(settings, platform_client(settings), started.api_url, postgres, redis,
                       postgres_proxy, redis_proxy, nodes)
    finally:
        for proxy in proxies:
            proxy.heal()
        if settings is not None:
            with contextlib.suppress(Exception):
                down(settings, drain_timeout_s=10.0)
        if nodes is not None:
            nodes.stop_all()
        for proxy in proxies:
            proxy.close()
        redis.stop()
        postgres.remove()
        shutil.rmtree(state, ignore_errors=True)


def _settings(database_url: str, redis_url: str, state: Path, api: bool,
              worker_node: bool = False) -> Any:
    from cluster.settings import Settings

    pools = {name: PoolConfig(replicas=n) for name, n in POOLS.items()}
    if worker_node:
        pools[NODE_POOL] = PoolConfig(replicas=NODE_POOL_REPLICAS, resources={RESOURCE: 1})
    return Settings(
        state_dir=state / "state", database_url=database_url, redis_url=redis_url,
        ray_address=None, namespace="ymera-chaos", ray_port=free_port(),
        dashboard_port=free_port(), metrics_port=free_port(), ray_metrics_port=free_port(),
        api_port=free_port(), api_enabled=api, num_cpus=8, default_replicas=0,
        pools=pools,
        task_timeout_s=30.0, retry_max_attempts=5, retry_backoff_base_s=0.2,
        retry_backoff_max_s=2.0, health_interval_s=0.5, health_timeout_s=3.0)


def _up(database_url: str, redis_url: str, state: Path, api: bool, worker_node: bool,
        progress: Callable[[str], None]) -> tuple[Any, Any, WorkerNodes | None]:
    """`cluster.platform.up` on fresh ports (with a worker node joining as soon as the head
    answers, since `up` waits for the pool only it can host); a head that fails to start (its
    GCS did not come up in time on a busy machine, or a port was taken meanwhile) is cleaned up
    and tried once more on other ports."""
    from cluster.local_ray import MARKER, stop_head
    from cluster.platform import down, up

    for attempt in (1, 2):
        settings = _settings(database_url, redis_url, state, api, worker_node)
        joining = None
        if worker_node:
            joining = JoinWhenUp(WorkerNode(f"127.0.0.1:{settings.ray_port}"), settings.ray_port,
                                 f"http://127.0.0.1:{settings.api_port}/health" if api else None)
            joining.start()
        try:
            started = up(settings)
            if joining is None:
                return settings, started, None
            joining.join(timeout=60)
            if joining.error is not None or not joining.node.joined():
                raise RuntimeError(f"the worker node did not join: {joining.error}")
            return settings, started, WorkerNodes(joining.node)
        except BaseException as exc:
            if joining is not None:
                joining.cancel()
                joining.join(timeout=15)
                joining.node.stop()
            head_failed = isinstance(exc, RuntimeError) and "ray start" in str(exc)
            if head_failed:  # `up` recorded no head: stop whatever of it did start
                settings.state_path.mkdir(parents=True, exist_ok=True)
                (settings.state_path / MARKER).write_text(f"127.0.0.1:{settings.ray_port}")
                stop_head(settings.state_path)
            else:
                with contextlib.suppress(Exception):
                    down(settings, drain_timeout_s=10.0)
            if attempt == 2 or not head_failed:
                raise
            progress(f"the Ray head did not start ({str(exc).splitlines()[0][:200]}); "
                     "trying again on other ports")
    raise AssertionError("unreachable")
