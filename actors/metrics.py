"""The orchestrator's Prometheus metrics: what happens to tasks, attempts, pools, routing and
workflow runs.

The orchestrator is the one writer of every task's and workflow run's lifecycle, so it is the
one process that counts them: every figure here comes from a single exporter (prometheus-client,
on the orchestrator's own HTTP endpoint), and nothing is counted twice however many agent
replicas run. Gauges (queue depth, replicas, dead letters, active runs) are read from the
orchestrator's live state when Prometheus scrapes, so a restarted orchestrator never leaves a
stale value behind; counters start again from zero after a restart, which `rate()` and
`increase()` allow for.

Label values are bounded: agent types, workflow names, tenants, statuses, outcomes and routing
methods, never task or run ids or free text. The catalogue is `docs/metrics.md`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Iterator
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("ymera.metrics")

prometheus_client.disable_created_metrics()

ATTEMPT_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
                           120, 300)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
STEP_WAIT_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                             10, 30, 60, 120, 300, 600)
RUN_DURATION_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
                                300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600)
UNROUTED = "unrouted"
NO_ROUTE = "none"
GAUGE_READ_TIMEOUT_S = 5.0


class OrchestratorMetrics:
    """Counters and histograms the orchestrator records as tasks move, plus the gauges it
    reports when scraped (`watch`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.address: str | None = None
        self._server: Any = None

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=self.registry)

        self.submitted = counter(
            "ymera_tasks_submitted", "Tasks that entered an agent type's queue.",
            ("agent_type", "tenant"))
        self.finished = counter(
            "ymera_tasks_finished", "Tasks that reached a final status.",
            ("agent_type", "tenant", "status"))
        self.retries = counter(
            "ymera_task_retries", "Retries scheduled, by how the attempt before ended.",
            ("agent_type", "outcome"))
        self.attempt_seconds = Histogram(
            "ymera_attempt_duration_seconds", "Wall time of each finished attempt.",
            ("agent_type", "outcome"), buckets=ATTEMPT_SECONDS_BUCKETS, registry=self.registry)
        self.cpu_seconds = counter(
            "ymera_cpu_seconds", "CPU seconds consumed by attempts.", ("agent_type", "tenant"))
        self.wall_seconds = counter(
            "ymera_attempt_seconds", "Wall seconds of attempts.", ("agent_type", "tenant"))
        self.restarts = counter(
            "ymera_replica_restarts",
            "Replicas replaced after dying or failing their health checks.", ("agent_type",))
        self.pool_scalings = counter(
            "ymera_pool_scalings",
            "Times a pool's autoscaler changed its desired size, by direction (up, down).",
            ("agent_type", "direction"))
        self.route_decisions = counter(
            "ymera_route_decisions", "Routing decisions, by the type chosen and how.",
            ("agent_type", "method"))
        self.route_confidence = Histogram(
            "ymera_route_confidence", "Confidence of the router's decisions.", ("method",),
            buckets=CONFIDENCE_BUCKETS, registry=self.registry)
        self.no_confident_route = counter(
            "ymera_no_confident_route",
            "Router decisions with no confident route (a fallback may still have taken it).")
        self.workflow_runs_started = counter(
            "ymera_workflow_runs_started", "Workflow runs submitted (a repeated idempotency key "
            "is not a new run) or retried.", ("workflow", "tenant"))
        self.workflow_runs_finished = counter(
            "ymera_workflow_runs_finished", "Workflow runs that reached a final status.",
            ("workflow", "tenant", "outcome"))
        self.workflow_step_wait = Histogram(
            "ymera_workflow_step_wait_seconds",
            "Time a workflow step's task waited rather than ran (queued, retry backoffs).",
            ("workflow",),
            buckets=STEP_WAIT_SECONDS_BUCKETS, registry=self.registry)
        self.workflow_run_duration = Histogram(
            "ymera_workflow_run_duration_seconds",
            "Time from a workflow run's submission to its final status.", ("workflow", "outcome"),
            buckets=RUN_DURATION_SECONDS_BUCKETS, registry=self.registry)
        prometheus_client.ProcessCollector(registry=self.registry)

    # ----------------------------------------------------------------- recording

    def task_submitted(self, agent_type: str, tenant: str) -> None:
        self.submitted.labels(agent_type, tenant).inc()

    def task_finished(self, agent_type: str | None, tenant: str, status: str) -> None:
        self.finished.labels(agent_type or UNROUTED, tenant, status).inc()

    def attempt_finished(self, agent_type: str, tenant: str, outcome: str, wall_s: float,
                         cpu_s: float) -> None:
        self.attempt_seconds.labels(agent_type, outcome).observe(wall_s)
        if wall_s > 0:
            self.wall_seconds.labels(agent_type, tenant).inc(wall_s)
        if cpu_s > 0:
            self.cpu_seconds.labels(agent_type, tenant).inc(cpu_s)

    def retry_scheduled(self, agent_type: str, outcome: str) -> None:
        self.retries.labels(agent_type, outcome).inc()

    def replica_restarted(self, agent_type: str) -> None:
        self.restarts.labels(agent_type).inc()

    def pool_scaled(self, agent_type: str, direction: str) -> None:
        self.pool_scalings.labels(agent_type, direction).inc()

    def routed(self, agent_type: str, method: str, confidence: float | None = None,
               confident: bool = True) -> None:
        """One routing decision: `agent_type` is the type chosen (`NO_ROUTE` when none was),
        `confidence` the router's (None for a type the submitter named)."""
        self.route_decisions.labels(agent_type, method).inc()
        if confidence is not None:
            self.route_confidence.labels(method).observe(confidence)
        if not confident:
            self.no_confident_route.inc()

    def workflow_started(self, workflow: str, tenant: str) -> None:
        self.workflow_runs_started.labels(workflow, tenant).inc()

    def workflow_finished(self, workflow: str, tenant: str, outcome: str,
                          duration_s: float) -> None:
        """A run reached `outcome` (succeeded, failed or cancelled) `duration_s` after it was
        submitted."""
        self.workflow_runs_finished.labels(workflow, tenant, outcome).inc()
        self.workflow_run_duration.labels(workflow, outcome).observe(max(duration_s, 0.0))

    def workflow_step_waited(self, workflow: str, seconds: float) -> None:
        """A step's task spent `seconds` waiting for a replica (or a retry) before it ended."""
        self.workflow_step_wait.labels(workflow).observe(max(seconds, 0.0))

    # ----------------------------------------------------------------- gauges and serving

    def watch(self, read_gauges: Callable[[], dict[str, Any]],
              loop: asyncio.AbstractEventLoop) -> None:
        """Report the gauges `read_gauges()` returns at each scrape, read on `loop` (the
        orchestrator's state belongs to its event loop, and scrapes arrive on another thread)."""
        self.registry.register(_LiveGauges(read_gauges, loop))

    def serve(self, host: str, port: int) -> str:
        """Serve `/metrics` on `host:port` (0: any free port); returns `host:port`."""
        server, _ = prometheus_client.start_http_server(port, host, registry=self.registry)
        self._server = server
        self.address = f"{host}:{server.server_port}"
        log.info("metrics at http://%s/metrics", self.address)
        return self.address

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _LiveGauges(Collector):
    """Gauges computed from the orchestrator's state at scrape time. If its event loop does
    not answer in time, the last values read are reported again."""

    def __init__(self, read_gauges: Callable[[], dict[str, Any]],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.read_gauges = read_gauges
        self.loop = loop
        self.last: dict[str, Any] = {}

    def _read(self) -> dict[str, Any]:
        if _running_loop() is self.loop:  # collected on the loop itself (tests, `status`)
            self.last = self.read_gauges()
            return self.last
        answer: concurrent.futures.Future = concurrent.futures.Future()

        def read() -> None:
            try:
                answer.set_result(self.read_gauges())
            except BaseException as exc:  # reported to the scraping thread
                answer.set_exception(exc)

        try:
            self.loop.call_soon_threadsafe(read)
            self.last = answer.result(GAUGE_READ_TIMEOUT_S)
        except (concurrent.futures.TimeoutError, RuntimeError) as exc:
            log.warning("metrics scrape: orchestrator state not read (%s); reporting the last "
                        "values", exc)
        return self.last

    def collect(self) -> Iterator[GaugeMetricFamily]:
        values = self._read()
        for name, doc, labels in GAUGES:
            family = GaugeMetricFamily(name, doc, labels=list(labels))
            for label_values, value in values.get(name, {}).items():
                family.add_metric(list(label_values), value)
            yield family


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


GAUGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("ymera_queue_depth", "Tasks waiting for a replica of this type (retry backoffs included).",
     ("agent_type",)),
    ("ymera_tasks_running", "Attempts in flight.", ("agent_type",)),
    ("ymera_routing_backlog", "Tasks waiting for a routing decision.", ()),
    ("ymera_replicas_desired", "Replicas the pool should have.", ("agent_type",)),
    ("ymera_replicas_alive", "Replicas ready and answering health checks.", ("agent_type",)),
    ("ymera_dead_letters", "Dead-lettered tasks in storage.", ()),
    ("ymera_workflow_runs_active", "Unfinished workflow runs, by status (pending, running, "
     "waiting).", ("status",)),
    ("ymera_workflow_runs_awaiting_approval",
     "Unfinished workflow runs with a step waiting for a person's decision.", ()),
    ("ymera_workflow_runs_overdue",
     "Unfinished workflow runs past their deadline (started + max run duration).", ()),
)
