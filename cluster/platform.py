"""Bringing the whole platform up and down: storage, Ray, the orchestrator and its pools."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import ray

from actors.deploy import ORCHESTRATOR_NAME, find_orchestrator, start_orchestrator
from cluster.client import Client, connect_ray
from actors.errors import PlatformUnavailable
from cluster.local_ray import local_head_address, start_head, stop_head
from cluster.settings import Settings
from storage.database import migrate

READY_TIMEOUT_S = 180.0


@dataclasses.dataclass(frozen=True)
class Started:
    ray_address: str
    started_ray: bool
    database_url: str
    dashboard_url: str | None
    redis: str
    api_url: str | None = None


def up(settings: Settings) -> Started:
    """Make the state directory private (0700), migrate storage, start or join Ray, deploy
    the orchestrator, wait for its pools, then deploy the HTTP API on Ray Serve (unless
    switched off)."""
    settings.private_state_path()
    migrate(settings.resolved_database_url)
    started_ray = settings.ray_address is None
    address = settings.ray_address or start_head(
        settings.state_path, settings.ray_port, settings.dashboard_port, settings.num_cpus,
        settings.ray_metrics_port, settings.head_resources)
    connect_ray(address, settings.namespace)
    orchestrator = start_orchestrator(settings.orchestrator_config())
    _wait_ready(orchestrator)
    api_url = None
    if settings.api_enabled:
        from serve_apps.deployment import ApiScaling, deploy_api

        scaling = ApiScaling(settings.api_replicas,
                             settings.api_max_replicas or settings.api_replicas,
                             target_ongoing_requests=settings.api_target_ongoing_requests)
        api_url = deploy_api(settings.api_config(), host=settings.api_host,
                             port=settings.api_port, scaling=scaling)
    return Started(
        ray_address=address,
        started_ray=started_ray,
        database_url=_masked(settings.resolved_database_url),
        dashboard_url=f"http://127.0.0.1:{settings.dashboard_port}" if started_ray else None,
        redis=_masked(settings.redis_url) if settings.redis_url
        else "not configured: single-node in-process equivalents",
        api_url=api_url,
    )


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
