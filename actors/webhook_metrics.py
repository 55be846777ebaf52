"""The webhook delivery actor's metrics: deliveries by outcome, how long an event takes from its
commit to its receiver, and the outbox's backlog.

Inside Ray they are `ray.util.metrics` (exported on each node's metrics endpoint with Ray's
`ray_` prefix, like the model gateway's); outside Ray (unit tests, embedding) `WebhookMetrics`
records them in memory only, so tests can read what was counted. Labels are tenants (a bounded
set that administrators create) and outcomes; never URLs, task ids or payloads. The catalogue is
in docs/metrics.md.
"""

from __future__ import annotations

import sys
from collections import Counter, deque
from typing import Any

LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600,
                     21600, 86400)


class WebhookMetrics:
    """What the delivery loop records; this base keeps it in memory (see the module)."""

    def __init__(self) -> None:
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.latencies_s: deque[float] = deque(maxlen=10_000)  # the latest
        self.pending = 0
        self.oldest_pending_s = 0.0

    def attempted(self, tenant: str, outcome: str) -> None:
        """One attempt ended `delivered`, `retry` or `failed`."""
        self.outcomes[(tenant, outcome)] += 1

    def delivered(self, seconds: float) -> None:
        """A delivery arrived `seconds` after its event was committed."""
        self.latencies_s.append(seconds)

    def backlog(self, pending: int, oldest_pending_s: float) -> None:
        """The outbox now: deliveries pending and the age of the oldest."""
        self.pending, self.oldest_pending_s = pending, oldest_pending_s


class RayWebhookMetrics(WebhookMetrics):
    """The metrics as `ray.util.metrics` (see the module)."""

    def __init__(self) -> None:
        super().__init__()
        from ray.util import metrics

        self._deliveries = metrics.Counter(
            "ymera_webhook_deliveries_total", "Webhook delivery attempts by outcome: delivered, "
            "retry (will be sent again) or failed (given up)", tag_keys=("tenant", "outcome"))
        self._latency = metrics.Histogram(
            "ymera_webhook_delivery_latency_seconds", "Time from an event's commit to its "
            "delivery's acceptance by the receiver (retries included)",
            boundaries=list(LATENCY_BUCKETS_S))
        self._pending = metrics.Gauge(
            "ymera_webhook_pending", "Webhook deliveries waiting to be sent or retried")
        self._oldest = metrics.Gauge(
            "ymera_webhook_oldest_pending_seconds", "Age of the oldest pending webhook delivery")

    def attempted(self, tenant: str, outcome: str) -> None:
        self._deliveries.inc(1, tags={"tenant": tenant, "outcome": outcome})

    def delivered(self, seconds: float) -> None:
        self._latency.observe(max(seconds, 0.0))

    def backlog(self, pending: int, oldest_pending_s: float) -> None:
        self._pending.set(pending)
        self._oldest.set(max(oldest_pending_s, 0.0))


def webhook_metrics() -> WebhookMetrics:
    """Ray's metrics inside a Ray worker, else the in-memory recorder."""
    ray: Any = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return WebhookMetrics()
    try:
        return RayWebhookMetrics()
    except Exception:  # metrics must never cost a delivery
        return WebhookMetrics()
