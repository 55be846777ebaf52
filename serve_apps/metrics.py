"""The HTTP API's metrics: requests by route template, method and status, their durations, and
requests refused by the rate limiter, by tenant.

    api_metrics().record_request("/api/v1/tasks/{task_id}", "GET", 200, 0.012)
    api_metrics().record_rate_limited("acme")

Inside a Ray Serve replica they are `ray.serve.metrics` (which add the application, deployment
and replica labels) and leave through the node's metrics endpoint with Ray's `ray_` prefix, as
`ray_ymera_api_requests_total`, `ray_ymera_api_request_duration_seconds_*` and
`ray_ymera_api_rate_limited_total`. Anywhere else (the app in a test, under a plain ASGI
server) they are kept in memory, where `snapshot()` reads them.

Guarantees: the metrics are created once per process, on first use; every label value comes
from a bounded set (route templates or `unmatched`, known methods or `OTHER`, numeric statuses,
tenants), never from a raw path, id or free text.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Final, Protocol

REQUESTS: Final = "ymera_api_requests_total"
DURATION: Final = "ymera_api_request_duration_seconds"
RATE_LIMITED: Final = "ymera_api_rate_limited_total"
DURATION_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
UNMATCHED: Final = "unmatched"
NO_TENANT: Final = "-"
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class ApiMetrics(Protocol):
    def record_request(self, route: str, method: str, status: int, duration_s: float) -> None:
        """One answered request: `route` is the matched template or `UNMATCHED`."""

    def record_rate_limited(self, tenant: str | None) -> None:
        """One request refused with 429 by the rate limiter (`None`: no tenant known yet)."""


def method_label(method: str) -> str:
    return method if method in METHODS else "OTHER"


class ServeApiMetrics:
    """The metrics as `ray.serve.metrics`, exported by Ray."""

    def __init__(self) -> None:
        from ray.serve import metrics

        # Ray Serve annotates `tag_keys` as `Tuple[str]` (exactly one key) where it takes any
        # number of keys (`Tuple[str, ...]`, as `ray.util.metrics` has it).
        self._requests = metrics.Counter(
            REQUESTS, description="HTTP requests answered",
            tag_keys=("route", "method", "status"))  # type: ignore[arg-type]
        self._duration = metrics.Histogram(
            DURATION, description="Time to answer an HTTP request, in seconds",
            boundaries=list(DURATION_BUCKETS_S),
            tag_keys=("route", "method"))  # type: ignore[arg-type]
        self._rate_limited = metrics.Counter(
            RATE_LIMITED, description="Requests refused with 429 by the rate limiter",
            tag_keys=("tenant",))

    def record_request(self, route: str, method: str, status: int, duration_s: float) -> None:
        method = method_label(method)
        self._requests.inc(1, tags={"route": route, "method": method, "status": str(status)})
        self._duration.observe(max(duration_s, 0.0), tags={"route": route, "method": method})

    def record_rate_limited(self, tenant: str | None) -> None:
        self._rate_limited.inc(1, tags={"tenant": tenant or NO_TENANT})


@dataclasses.dataclass
class MetricsSnapshot:
    """Counts so far: requests by (route, method, status), durations by (route, method) as
    (observations, total seconds), refusals by tenant."""

    requests: dict[tuple[str, str, str], int]
    durations: dict[tuple[str, str], tuple[int, float]]
    rate_limited: dict[str, int]


class InMemoryApiMetrics:
    """The same metrics in this process's memory, bounded by the label sets."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self._durations: dict[tuple[str, str], tuple[int, float]] = {}
        self._rate_limited: collections.Counter[str] = collections.Counter()

    def record_request(self, route: str, method: str, status: int, duration_s: float) -> None:
        method = method_label(method)
        with self._lock:
            self._requests[(route, method, str(status))] += 1
            count, total = self._durations.get((route, method), (0, 0.0))
            self._durations[(route, method)] = (count + 1, total + max(duration_s, 0.0))

    def record_rate_limited(self, tenant: str | None) -> None:
        with self._lock:
            self._rate_limited[tenant or NO_TENANT] += 1

    def snapshot(self) -> MetricsSnapshot:
        with self._lock:
            return MetricsSnapshot(dict(self._requests), dict(self._durations),
                                   dict(self._rate_limited))


_metrics: ApiMetrics | None = None
_metrics_lock = threading.Lock()


def api_metrics() -> ApiMetrics:
    """This process's API metrics, created on first use: Serve's in a Serve replica, else in
    memory."""
    global _metrics
    if _metrics is None:
        with _metrics_lock:
            if _metrics is None:
                _metrics = ServeApiMetrics() if _in_serve_replica() else InMemoryApiMetrics()
    return _metrics


def _in_serve_replica() -> bool:
    try:
        from ray import serve
        from ray.serve.exceptions import RayServeException
    except ImportError:
        return False
    try:
        serve.get_replica_context()
    except RayServeException:
        return False
    return True
