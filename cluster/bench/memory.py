"""`ymera bench memory`: how much memory the platform's own processes hold, per process.

It starts the platform as `ymera up` does on embedded defaults (SQLite in a state directory of
its own, no Redis, every built-in pool at its default size, the router and the HTTP API), but on
a private Ray head on free ports, waits until it is ready, and finds every actor's process with
Ray's state API. It reports each process's resident memory (RSS, and USS/PSS, which count
shared pages once) idle, then the peak RSS while `--tasks` trivial calculator tasks run (the
load of `ymera bench core`), and the totals against the goal of 2.0 GB. Whatever happens, it
stops what it started (`cluster.platform.down`: only its own head).

"The platform's own" processes are the orchestrator, the router, the agent replicas, the API
replica and any other actor of the platform's namespace; Ray Serve's controller and HTTP proxy
are listed but counted apart, like Ray's own daemons, which are not listed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil

from actors.pools import parse_replica_name
from cluster.bench.core import SUBMIT_BATCH, PeakSampler
from cluster.bench.report import publish_report
from storage.errors import InvalidRequest

GOAL_MB = 2048.0
LABEL_WIDTH = 48
SETTLE_S = 5.0
LOAD_TIMEOUT_S = 900.0
SERVE_INFRASTRUCTURE = ("serve controller", "serve proxy")
_ROLES = {"Orchestrator": "orchestrator", "RouterService": "router",
          "LlmGatewayActor": "model gateway", "WebhookDeliveryActor": "webhook delivery",
          "ServeController": "serve controller", "ProxyActor": "serve proxy"}


@dataclasses.dataclass(frozen=True)
class ActorProcess:
    """One live actor's process: what it is for, and its Ray name (if any)."""

    role: str
    name: str
    pid: int


def role_of(class_name: str, name: str) -> str:
    """What an actor is for: `replica:<pool>` for an agent replica, `api replica` for a Serve
    replica of the HTTP API, else a name for its class (the class name itself when unknown)."""
    replica = parse_replica_name(name)
    if replica is not None:
        return f"replica:{replica[0]}"
    if class_name.startswith("ServeReplica:"):
        return "api replica"
    return _ROLES.get(class_name, class_name)


def platform_actors(actors: Iterable[Any]) -> list[ActorProcess]:
    """The live actors (as Ray's state API lists them) that have a process, with their roles."""
    found = []
    for actor in actors:
        if getattr(actor, "state", "ALIVE") != "ALIVE" or not getattr(actor, "pid", None):
            continue
        name = getattr(actor, "name", None) or ""
        found.append(ActorProcess(role_of(actor.class_name, name), name or actor.class_name,
                                  int(actor.pid)))
    return sorted(found, key=lambda a: (a.role, a.name))


def process_memory(pid: int, full: bool) -> dict[str, float | None]:
    """RSS of a process in MB, and its USS and PSS when `full` (reading its page map)."""
    process = psutil.Process(pid)
    if not full:
        return {"rss_mb": _mb(process.memory_info().rss)}
    info = process.memory_full_info()
    return {"rss_mb": _mb(info.rss), "uss_mb": _mb(info.uss),
            "pss_mb": _mb(getattr(info, "pss", None))}


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


def totals(processes: list[dict[str, Any]], field: str) -> dict[str, Any]:
    """`field` (e.g. `rss_mb`) summed per role (replicas per pool), over the platform's own
    processes, and with Ray Serve's controller and proxy too."""
    by_role: dict[str, float] = {}
    counts: dict[str, int] = {}
    for process in processes:
        value = process.get(field)
        if value is None:
            continue
        by_role[process["role"]] = round(by_role.get(process["role"], 0.0) + value, 1)
        counts[process["role"]] = counts.get(process["role"], 0) + 1
    own = sum(v for role, v in by_role.items() if role not in SERVE_INFRASTRUCTURE)
    return {"by_role": {role: {"processes": counts[role], field: by_role[role]}
                        for role in sorted(by_role)},
            "platform": round(own, 1), "with_serve": round(sum(by_role.values()), 1)}


def run_memory_benchmark(args: Any) -> dict[str, Any]:
    if args.tasks < 1:
        raise InvalidRequest(f"--tasks must be at least 1, not {args.tasks}")
    with private_platform() as (settings, client):
        from ray.util.state import list_actors

        # its own head's state API, named: left to find one, Ray picks the newest on the machine
        actors = platform_actors(list_actors(
            address=f"http://127.0.0.1:{settings.dashboard_port}",
            filters=[("state", "=", "ALIVE")], detail=True, limit=10_000,
            raise_on_missing_output=False))
        pools = {p["agent_type"]: p["live"] for p in client.status()["pools"]}
        _check_same_cluster(actors, pools)
        time.sleep(SETTLE_S)
        idle = [_measured(actor, full=True) for actor in actors]
        with PeakSampler([a.pid for a in actors]) as sampler:
            started = time.perf_counter()
            succeeded = _load(client, args.tasks)
            load_s = time.perf_counter() - started
        after = {a.pid: _measured(a, full=True) for a in actors}
        processes = []
        for actor, at_idle in zip(actors, idle):
            processes.append({
                **at_idle,
                "peak_rss_under_load_mb": sampler.peaks.get(actor.pid),
                "after_load": {k: v for k, v in after[actor.pid].items()
                               if k.endswith("_mb")}})
    idle_rss = totals(processes, "rss_mb")
    peak = totals(processes, "peak_rss_under_load_mb")
    report = {
        "machine": {"cpus": os.cpu_count(),
                    "memory_gb": round(psutil.virtual_memory().total / 2**30)},
        "pools": pools,
        "load": {"tasks": args.tasks, "succeeded": succeeded, "seconds": round(load_s, 1)},
        "processes": processes,
        "idle": {"rss_mb": idle_rss, "uss_mb": totals(processes, "uss_mb"),
                 "pss_mb": totals(processes, "pss_mb")},
        "under_load": {"peak_rss_mb": peak,
                       "peak_of_summed_rss_mb_with_serve": sampler.total_peak},
        "goal": {"platform_rss_mb_at_most": GOAL_MB,
                 "idle_rss_mb": idle_rss["platform"],
                 "peak_rss_mb": peak["platform"],
                 "met": max(idle_rss["platform"], peak["platform"]) <= GOAL_MB},
    }
    return publish_report(report, args, _summary)


def _check_same_cluster(actors: list[ActorProcess], pools: dict[str, int]) -> None:
    """The actors listed are this platform's: one orchestrator, and as many replicas of each
    pool as it reports live (RAY_ADDRESS or RAY_API_SERVER_ADDRESS would point the state API
    at another cluster)."""
    listed = {name: 0 for name in pools}
    for actor in actors:
        if actor.role.startswith("replica:"):
            pool = actor.role.removeprefix("replica:")
            listed[pool] = listed.get(pool, 0) + 1
    orchestrators = sum(1 for actor in actors if actor.role == "orchestrator")
    if listed != pools or orchestrators != 1:
        raise RuntimeError(f"Ray's state API listed {orchestrators} orchestrators and replicas "
                           f"{listed}, but the platform reports live replicas {pools}: is "
                           "RAY_ADDRESS or RAY_API_SERVER_ADDRESS set to another cluster?")


def _measured(actor: ActorProcess, full: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"role": actor.role, "name": actor.name, "pid": actor.pid}
    try:
        row.update(process_memory(actor.pid, full))
    except psutil.Error as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
    return row


def _load(client: Any, tasks: int) -> int:
    """`tasks` trivial calculator tasks submitted in batches, then waited for; how many
    succeeded."""
    from storage.messages import TaskRequest, TaskStatus

    ids: list[str] = []
    for offset in range(0, tasks, SUBMIT_BATCH):
        ids += client.submit_many([TaskRequest(f"{i}+1", {"expression": f"{i}+1"}, "calculator")
                                   for i in range(offset, min(tasks, offset + SUBMIT_BATCH))])
    finished = client.wait_many(ids, LOAD_TIMEOUT_S)
    return sum(1 for task in finished if task.status is TaskStatus.SUCCEEDED)


@contextlib.contextmanager
def private_platform() -> Iterator[tuple[Any, Any]]:
    """The platform on embedded defaults in a state directory of its own, on a private Ray
    head on free ports; stopped and removed however the block ends."""
    from cluster.chaos.services import free_port
    from cluster.local_ray import MARKER, stop_head
    from cluster.platform import client as platform_client
    from cluster.platform import down, up
    from cluster.settings import Settings

    state = Path(tempfile.mkdtemp(prefix="ymera-memory-"))
    settings = Settings(
        state_dir=state / "state", database_url=None, redis_url=None, ray_address=None,
        namespace=f"ymera-memory-{uuid.uuid4().hex[:8]}", ray_port=free_port(),
        dashboard_port=free_port(), metrics_port=free_port(), ray_metrics_port=free_port(),
        api_port=free_port(), api_enabled=True, default_replicas=None, pools={})
    try:
        try:
            up(settings)
        except RuntimeError as exc:
            if "ray start" in str(exc):  # `up` recorded no head: stop whatever of it started
                settings.state_path.mkdir(parents=True, exist_ok=True)
                (settings.state_path / MARKER).write_text(f"127.0.0.1:{settings.ray_port}")
            raise
        yield settings, platform_client(settings)
    finally:
        with contextlib.suppress(Exception):
            down(settings, drain_timeout_s=10.0)
        stop_head(settings.state_path)
        shutil.rmtree(state, ignore_errors=True)


def _summary(report: dict[str, Any]) -> str:
    lines = [f"{'process':<{LABEL_WIDTH}} {'pid':>7} {'idle RSS':>9} {'USS':>7} {'PSS':>7} "
             f"{'peak RSS':>9}  (MB)"]
    for p in report["processes"]:
        label = p["role"] if p["role"] == p["name"] else f"{p['role']} ({p['name']})"
        lines.append(f"{label[:LABEL_WIDTH]:<{LABEL_WIDTH}} {p['pid']:>7} {_cell(p.get('rss_mb'))} "
                     f"{_cell(p.get('uss_mb'), 7)} {_cell(p.get('pss_mb'), 7)} "
                     f"{_cell(p.get('peak_rss_under_load_mb'))}")
    goal = report["goal"]
    idle, peak = report["idle"], report["under_load"]["peak_rss_mb"]
    lines += [
        f"platform's own processes: RSS idle {goal['idle_rss_mb']:,.0f} MB (PSS "
        f"{idle['pss_mb']['platform']:,.0f} MB), peak under load {goal['peak_rss_mb']:,.0f} MB; "
        f"goal <= {goal['platform_rss_mb_at_most']:,.0f} MB: {'met' if goal['met'] else 'missed'}",
        f"with Ray Serve's controller and proxy: idle {idle['rss_mb']['with_serve']:,.0f} MB, "
        f"peak {peak['with_serve']:,.0f} MB",
        f"load: {report['load']['succeeded']}/{report['load']['tasks']} tasks in "
        f"{report['load']['seconds']} s"]
    return "\n".join(lines)


def _cell(value: float | None, width: int = 9) -> str:
    return f"{'-' if value is None else f'{value:,.0f}':>{width}}"
