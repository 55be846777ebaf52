"""The model gateway as a supervised Ray actor: `LlmGatewayActor`, named `GATEWAY_NAME` in the
platform's namespace, wrapping `ml.llm.gateway.LlmGateway`.

    handle = find_llm_gateway(namespace)
    answer = await handle.complete.remote({"tenant": "acme", "messages": [...]})
    async for ref in handle.stream.options(num_returns="streaming").remote(request):
        item = await ref                  # {"delta"} ..., then {"done"} or {"error"}

Errors raised in the actor (`InvalidRequest`, `BudgetExceeded`, `NoDeploymentAnswered`, ...)
reach callers wrapped in `ray.exceptions.RayTaskError`, whose `cause` is the original.

Fault-tolerance contract
- Durable (in storage, shared by every replica and kept across restarts): token budgets,
  reservations and usage (`storage.llm_budget`), cached answers (`storage.llm_cache`), and the
  circuit breakers: in Redis under the platform's namespace when `redis_url` is set, else in
  the database (`storage.llm_breakers`). A restarted gateway sees every breaker as it was.
- Rebuilt on (re)start: the providers' HTTP clients, the rate-limit windows (per process, so
  they start empty), the in-memory cache front, the breaker records read in the last half
  second (`ml.llm.breaker_reads`: another replica's breaker changes reach this one at most
  that late).
- Lost with the process: calls in flight. Their reservations expire after their TTL; a
  half-open breaker's probe slot frees itself after `probe_timeout_s`.

Keys are read inside this process only (from the environment variable or the file each
deployment names): the constructor receives settings that say where keys are, never a key,
so nothing secret appears in the actor's arguments on the Ray dashboard.

A plain class: `actors.ray_backend.RayBackend.start_llm_gateway` makes it a detached actor
that Ray restarts forever; its calls are not retried by Ray (a model call is not idempotent).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

from actors.logs import configure_logging
from ml.llm.accounting import TokenAccounts
from ml.llm.gateway import GatewayMetrics, LlmGateway, NoMetrics
from ml.llm.breaker_reads import RecentBreakerReads
from ml.llm.resilience import (
    CLOSED, HALF_OPEN, OPEN, BreakerStore, CircuitBreaker, InMemoryBreakerStore,
)
from ml.llm.settings import LlmSettings
from ml.llm.types import LlmConfigError
from storage.database import create_engine, ensure_schema_current
from storage.errors import InvalidRequest, StorageError
from storage.llm_breakers import RedisBreakerStore, SqlBreakerStore
from storage.llm_budget import PERIODS, LlmBudgetStore
from storage.llm_cache import LlmResponseCache

log = logging.getLogger("ymera.llm.gateway")

GATEWAY_NAME: Final = "llm-gateway"
STORE_RETRY_DELAYS_S: Final = (0.5, 1.0, 2.0, 5.0)
LATENCY_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BREAKER_STATE_VALUES: Final = {CLOSED: 0.0, HALF_OPEN: 1.0, OPEN: 2.0}


class RayGatewayMetrics:
    """The gateway's metrics as `ray.util.metrics`, exported on the node's metrics endpoint
    with Ray's `ray_` prefix. Labels: model groups, deployments, tenants (a bounded set that
    administrators create), outcomes (error codes); never request text or task ids."""

    def __init__(self) -> None:
        from ray.util import metrics

        self._requests = metrics.Counter(
            "ymera_llm_requests_total", "Model calls answered or failed, by group, the "
            "deployment that answered (none when no deployment did) and outcome",
            tag_keys=("group", "deployment", "outcome"))
        self._latency = metrics.Histogram(
            "ymera_llm_request_duration_seconds", "Time to answer a model call (a stream: to "
            "its last item)", boundaries=list(LATENCY_BUCKETS_S), tag_keys=("group", "outcome"))
        self._input = metrics.Counter(
            "ymera_llm_input_tokens_total", "Prompt tokens used", tag_keys=("group", "tenant"))
        self._output = metrics.Counter(
            "ymera_llm_output_tokens_total", "Answer tokens used", tag_keys=("group", "tenant"))
        self._cost = metrics.Counter(
            "ymera_llm_cost_usd_total", "Cost of model calls in US dollars",
            tag_keys=("group", "tenant"))
        self._refused = metrics.Counter(
            "ymera_llm_budget_refusals_total", "Model calls refused by the tenant's token budget",
            tag_keys=("group", "tenant"))
        self._cache = metrics.Counter(
            "ymera_llm_cache_lookups_total", "Cache lookups of requests that asked for caching",
            tag_keys=("group", "result"))
        self._breaker = metrics.Gauge(
            "ymera_llm_breaker_state", "Circuit breaker of each deployment: 0 closed, "
            "1 half-open, 2 open", tag_keys=("deployment",))
        self._fallbacks = metrics.Counter(
            "ymera_llm_fallbacks_total", "Model calls answered by a deployment other than their "
            "group's first", tag_keys=("group", "deployment"))

    def request_finished(self, group: str, deployment: str, outcome: str,
                         latency_s: float) -> None:
        self._requests.inc(1, tags={"group": group, "deployment": deployment,
                                    "outcome": outcome})
        self._latency.observe(max(latency_s, 0.0), tags={"group": group, "outcome": outcome})

    def tokens_used(self, group: str, tenant: str, input_tokens: int, output_tokens: int,
                    cost_usd: float) -> None:
        tags = {"group": group, "tenant": tenant}
        if input_tokens:
            self._input.inc(input_tokens, tags=tags)
        if output_tokens:
            self._output.inc(output_tokens, tags=tags)
        if cost_usd > 0:
            self._cost.inc(cost_usd, tags=tags)

    def budget_refused(self, group: str, tenant: str) -> None:
        self._refused.inc(1, tags={"group": group, "tenant": tenant})

    def cache_lookup(self, group: str, hit: bool) -> None:
        self._cache.inc(1, tags={"group": group, "result": "hit" if hit else "miss"})

    def breaker_state(self, deployment: str, state: str) -> None:
        self._breaker.set(BREAKER_STATE_VALUES.get(state, 0.0), tags={"deployment": deployment})

    def fell_back(self, group: str, deployment: str) -> None:
        self._fallbacks.inc(1, tags={"group": group, "deployment": deployment})


class LlmGatewayActor:
    """The platform's model gateway (see the module's docstring)."""

    def __init__(self, settings: LlmSettings, database_url: str, redis_url: str | None,
                 namespace: str, log_format: str = "auto", log_level: str = "INFO") -> None:
        configure_logging(log_format, log_level)
        self.settings = settings
        self.database_url = database_url
        self.redis_url = redis_url
        self.namespace = namespace
        self.gateway: LlmGateway | None = None
        self._breakers: BreakerStore = InMemoryBreakerStore()  # replaced once storage is open
        self._start_error: BaseException | None = None
        self._ready = asyncio.Event()
        self._starting = asyncio.get_running_loop().create_task(self._start(), name="llm-start")

    async def _start(self) -> None:
        try:
            budgets = await self._open_budgets()
            store: BreakerStore = (RedisBreakerStore(self.redis_url, self.namespace)
                                   if self.redis_url else SqlBreakerStore(budgets.engine))
            self._breakers = store
            metrics = _metrics()
            self.gateway = LlmGateway.from_settings(
                self.settings, CircuitBreaker(RecentBreakerReads(store), self.settings.breaker),
                budgets, LlmResponseCache(budgets.engine), metrics)
            for deployment in self.settings.config.deployments:
                record = await store.get(deployment.name)
                metrics.breaker_state(deployment.name, record.state if record else CLOSED)
            log.info("model gateway ready: groups %s; breakers in %s",
                     ", ".join(self.settings.groups), "Redis" if self.redis_url else "the database")
        except (LlmConfigError, StorageError) as exc:
            self._start_error = exc
            log.error("the model gateway cannot start: %s", exc)
        finally:
            self._ready.set()

    async def _open_budgets(self) -> LlmBudgetStore:
        failures = 0
        while True:
            engine = create_engine(self.database_url)
            try:
                await ensure_schema_current(engine)
                return LlmBudgetStore(engine)
            except StorageError as exc:
                await engine.dispose()
                delay = STORE_RETRY_DELAYS_S[min(failures, len(STORE_RETRY_DELAYS_S) - 1)]
                failures += 1
                log.error("the model gateway cannot open storage (%s); retrying in %.1fs", exc,
                          delay)
                await asyncio.sleep(delay)

    async def _gateway(self) -> LlmGateway:
        await self._ready.wait()
        if self.gateway is None:
            raise self._start_error or StorageError("the model gateway did not start")
        return self.gateway

    async def ready(self) -> dict[str, Any]:
        """Wait until the stores are open; the groups and the default group."""
        await self._gateway()
        return {"groups": list(self.settings.groups), "default_group": self.settings.default_group}

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        return await (await self._gateway()).complete(request)

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        gateway = await self._gateway()
        async for item in gateway.stream(request):
            yield item

    async def status(self) -> dict[str, Any]:
        """The groups and every deployment with its breaker's state."""
        gateway = await self._gateway()
        deployments = []
        for d in self.settings.config.deployments:
            record = await self._breakers.get(d.name)  # as stored now, not as remembered
            deployments.append({"name": d.name, "group": d.group, "provider": d.provider,
                                "model": d.model, "breaker": record.state if record else CLOSED,
                                "rpm": d.rpm, "tpm": d.tpm})
        return {"groups": list(self.settings.groups),
                "default_group": self.settings.default_group,
                "fallbacks": {g: list(f) for g, f in self.settings.config.fallbacks.items()},
                "breaker_store": "redis" if self.redis_url else "database",
                "deployments": deployments}

    async def budget(self, tenant: str) -> dict[str, Any]:
        """`tenant`'s budget this period (the default one given first, if it has none)."""
        accounts = _accounts(await self._gateway())
        await accounts.apply_default(tenant)
        await accounts.flush()
        status = await accounts.store.status(tenant)
        return {"tenant": tenant, "limit_tokens": status.limit_tokens, "period": status.period,
                "period_key": status.period_key, "used_tokens": status.used_tokens,
                "reserved_tokens": status.reserved_tokens,
                "remaining_tokens": status.remaining_tokens}

    async def set_budget(self, tenant: str, limit_tokens: int | None,
                         period: str | None = None) -> dict[str, Any]:
        """Limit `tenant` to `limit_tokens` per `period` (default: the settings' period).
        None returns the tenant to the default budget (unlimited when there is none)."""
        accounts = _accounts(await self._gateway())
        period = period or self.settings.budget_period
        if period not in PERIODS:
            raise InvalidRequest(f"period: must be one of {', '.join(PERIODS)}, not {period!r}",
                                 {"field": "period"})
        if limit_tokens is None and self.settings.default_budget_tokens is not None:
            limit_tokens, period = (self.settings.default_budget_tokens,
                                    self.settings.budget_period)
        await accounts.set_limit(tenant, limit_tokens, period)
        return await self.budget(tenant)

    async def usage(self, tenant: str, task_id: str | None = None) -> dict[str, Any]:
        """The tokens and cost of `tenant`'s model calls (of one of its tasks when given),
        those answered here so far included."""
        accounts = _accounts(await self._gateway())
        await accounts.flush()
        totals = (await accounts.store.task_usage(tenant, task_id) if task_id is not None
                  else await accounts.store.tenant_usage(tenant))
        return {"tenant": tenant, "task_id": task_id, "calls": totals.calls,
                "input_tokens": totals.input_tokens, "output_tokens": totals.output_tokens,
                "cost_usd": totals.cost}


def _accounts(gateway: LlmGateway) -> TokenAccounts:
    assert gateway.accounts is not None  # the actor always opens the budget store
    return gateway.accounts


def _metrics() -> GatewayMetrics:
    """Ray's metrics inside a Ray worker; none elsewhere (an in-process stand-in)."""
    import ray

    return RayGatewayMetrics() if ray.is_initialized() else NoMetrics()


def find_llm_gateway(namespace: str) -> Any | None:
    """The handle of the gateway actor of `namespace`, or None when there is none."""
    import ray

    try:
        return ray.get_actor(GATEWAY_NAME, namespace=namespace)
    except ValueError:
        return None
