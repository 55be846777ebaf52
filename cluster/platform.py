"""Bringing the whole platform up and down: storage, Ray, the orchestrator and its pools."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import ray

from actors.deploy import ORCHESTRATOR_NAME, find_orchestrator, start_orchestrator
from cluster.client import Client, connect_ray
from actors.errors import PlatformUnavailable
from cluster.local_ray import local_head_address, start_head, stop_head
from cluster.settings import Settings
from storage.database import migrate

READY_TIMEOUT_S = 180.0
_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class Started:
    ray_address: str
    started_ray: bool
    database_url: str
    dashboard_url: str | None
    redis: str
    api_url: str | None = None
    ready_s: float | None = None
    phases: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)


def up(settings: Settings) -> Started:
    """Make the state directory private (0700), then bring everything up with what does not
    depend on each other side by side: storage is migrated while the Ray head starts; the HTTP
    API (unless switched off) deploys on Ray Serve while the orchestrator starts its pools and
    the router loads its model. Returns once every pool is live, the router is ready and the
    API answers; `Started.phases` says how long each part took, from the start of `up`."""
    clock = _Phases()
    settings.private_state_path()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ymera-up") as side:
        migrated = side.submit(clock.timed, "storage", migrate, settings.resolved_database_url)
        started_ray = settings.ray_address is None
        address = settings.ray_address or clock.timed(
            "ray_head", start_head, settings.state_path, settings.ray_port,
            settings.dashboard_port, settings.num_cpus, settings.ray_metrics_port,
            settings.head_resources)
        clock.timed("ray_connect", connect_ray, address, settings.namespace)
        migrated.result()
        orchestrator = clock.timed("orchestrator", start_orchestrator,
                                   settings.orchestrator_config())
        api = side.submit(clock.timed, "api", _deploy_api, settings)
        clock.timed("pools_and_router", _wait_ready, orchestrator)
        api_url = api.result()
    return Started(
        ray_address=address,
        started_ray=started_ray,
        database_url=_masked(settings.resolved_database_url),
        dashboard_url=f"http://127.0.0.1:{settings.dashboard_port}" if started_ray else None,
        redis=_masked(settings.redis_url) if settings.redis_url
        else "not configured: single-node in-process equivalents",
        api_url=api_url,
        ready_s=clock.elapsed(),
        phases=clock.phases,
    )


class _Phases:
    """Each phase's start and duration in seconds from the start of `up` (phases overlap)."""

    def __init__(self) -> None:
        self._started = time.monotonic()
        self.phases: dict[str, dict[str, float]] = {}

    def elapsed(self) -> float:
        return round(time.monotonic() - self._started, 2)

    def timed(self, name: str, call: Callable[..., _T], *args: Any) -> _T:
        began = time.monotonic()
        try:
            return call(*args)
        finally:
            self.phases[name] = {"start_s": round(began - self._started, 2),
                                 "took_s": round(time.monotonic() - began, 2)}


def _deploy_api(settings: Settings) -> str | None:
    if not settings.api_enabled:
        return None
    from serve_apps.deployment import ApiScaling, deploy_api

    scaling = ApiScaling(settings.api_replicas, settings.api_max_replicas or settings.api_replicas,
                         target_ongoing_requests=settings.api_target_ongoing_requests)
    return deploy_api(settings.api_config(), host=settings.api_host, port=settings.api_port,
                      scaling=scaling)


def _wait_ready(orchestrator: Any) -> None:
    """Wait for every pool to have a live replica, or say which ones do not and why."""
    try:
        ray.get(orchestrator.ready.remote(), timeout=READY_TIMEOUT_S)
        return
    except ray.exceptions.GetTimeoutError:
        pass
    status = ray.get(orchestrator.status.remote(), timeout=60)
    short = [f"{p['agent_type']} ({p['live']}/{p['desired']} live)" for p in status["pools"]
             if p["live"] < p["desired"]]
    free = ray.available_resources()
    raise PlatformUnavailable(
        f"after {READY_TIMEOUT_S:g}s these pools have no live replica: {', '.join(short)}. "
        f"The cluster has CPU {free.get('CPU', 0):g} and memory "
        f"{free.get('memory', 0) / 2**30:.1f} GiB free; lower their replicas or resources "
        "with YMERA_POOLS, or add capacity (YMERA_NUM_CPUS for a local head). `ymera status` "
        "shows the pools; the orchestrator keeps trying.",
        {"pools": short})


def down(settings: Settings, drain_timeout_s: float = 60.0) -> dict[str, Any]:
    """Drain the orchestrator, stop its pools and itself, then the local Ray head if `up`
    started it. Tasks still queued stay in storage and resume at the next `up`."""
    report: dict[str, Any] = {"drained": None, "replicas_stopped": 0, "ray_stopped": False}
    try:
        connect_ray(_address(settings), settings.namespace)
        orchestrator = find_orchestrator(settings.namespace)
    except Exception as exc:  # nothing running: only the head may be left
        report["orchestrator"] = f"not running ({exc})"
    else:
        report["api_stopped"] = _stop_api()
        report["drained"] = ray.get(orchestrator.drain.remote(drain_timeout_s))
        report["replicas_stopped"] = ray.get(orchestrator.stop_pools.remote())
        ray.kill(orchestrator, no_restart=True)
        report["webhook_delivery_stopped"] = _stop_webhook_delivery(settings.namespace)
        _wait_gone(settings.namespace)
    if ray.is_initialized():
        ray.shutdown()
    report["ray_stopped"] = stop_head(settings.state_path)
    return report


def _stop_webhook_delivery(namespace: str) -> bool:
    """Kill the webhook delivery actor for good if one runs (pending deliveries stay in the
    outbox and leave at the next `up`); whether it did."""
    from actors.webhook_delivery import find_webhook_delivery

    handle = find_webhook_delivery(namespace)
    if handle is None:
        return False
    ray.kill(handle, no_restart=True)
    return True


def _stop_api() -> bool:
    """Stop the HTTP API's Serve application if one runs; whether it did."""
    from ray import serve

    try:
        if not serve.status().applications:
            return False
    except Exception:  # Serve was never started on this cluster
        return False
    from serve_apps.deployment import shutdown_api

    shutdown_api()
    return True


def _wait_gone(namespace: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(ORCHESTRATOR_NAME, namespace=namespace)
        except ValueError:
            return
        time.sleep(0.1)


def _masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _address(settings: Settings) -> str:
    """The Ray address to join; for the local head, only if it is running (joining a head that
    is not there makes Ray retry for a long time)."""
    return settings.ray_address or local_head_address(settings.state_path, settings.ray_port)


def client(settings: Settings) -> Client:
    return Client.connect(_address(settings), settings.namespace)
