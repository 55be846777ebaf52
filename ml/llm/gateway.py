"""The model gateway: one checked call of a tenant, answered by the first deployment of its
model group that can, within the tenant's token budget, optionally from the cache.

`LlmGateway.complete(request)` answers a request dict (`ml.llm.gateway_request`) with an answer
dict; `LlmGateway.stream(request)` yields `{"delta": text}` items, then exactly one
`{"done": answer}` or, when the answer breaks off mid-stream, `{"error": {"code", "message",
"deployment"}}`. Failures before the first delta raise, after failover, like `complete`:

    {"text", "model", "deployment", "group", "finish_reason",
     "usage": {"input_tokens", "output_tokens"} | None, "cost_usd", "cached"}

It holds no Ray: the actor (`actors.llm_gateway`) wraps it, tests use it as it is.
Guarantees, in the order a call meets them:

- **Checked input**: a bad request is an `InvalidRequest` naming the field; nothing is spent.
- **Cache** (opt-in, `cache_ttl_s`): the key is the tenant, the group, the messages and the
  parameters, and lookups are by tenant, so one tenant's answer never serves another. A hit
  answers with `"cached": true`, no usage, cost 0, and takes nothing from the budget; it is
  counted in the metrics (cache hits) but is not a usage record, since no model was called.
  A cache that cannot be read or written is logged and skipped: it never fails a call.
- **Budget** (`ml.llm.accounting`): before the call, an estimate (the prompt's characters / 4,
  plus `max_tokens`) is reserved atomically for a tenant with a budget; a refusal is
  `BudgetExceeded` with the store's details (limit, used, reserved, estimate). After the call
  the reservation is reconciled with the usage the provider reported (in the background, many
  calls in one transaction: the reservation holds the estimate until then; a task's call
  waits for its commit), and the usage and cost are recorded for the tenant and the task;
  `flush()` waits for those writes. Reservations come from blocks leased per tenant, so most
  calls reserve in memory. **When the provider reports no
  usage** the tokens are estimated the same way (prompt and answer characters / 4), recorded
  and charged, and the answer's `usage` is None so nobody mistakes the estimate for a report.
  A call that fails gives its reservation back; a stream that breaks (or is left) after its
  first delta is charged for the estimate of what was streamed. A tenant with no budget of its
  own gets `settings.default_budget_tokens` on its first call here (an operator's budget is
  never overwritten; an operator who removes a tenant's budget returns it to the default).
- **Rate limits and breakers**: `ml.llm.rate_limits` — a deployment at its rpm/tpm limit is
  skipped like one whose breaker is open; when all are, the call waits for the first to have
  room if that is within `MAX_WAIT_S`, else raises `RateLimited` with the wait. Retries,
  Retry-After and failover are `ml.llm.fallback`'s.
- **Privacy**: keys are read by the providers and appear nowhere here; prompts and answers are
  logged (DEBUG) only when `settings.log_prompts`, which also decides whether the SDKs' own
  request logs show them.

If the usage cannot be recorded after the model answered, the answer is still returned and the
failure logged (the reservation then expires after its TTL; the tokens go uncounted). Budget
and breaker stores that fail before the call raise their `StorageError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import (
    AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence,
)
from typing import Any, Final, Protocol, cast

from ml.llm.config import Deployment
from ml.llm.fallback import ChatRequest, StreamItem, call_with_fallback, stream_with_fallback
from ml.llm.accounting import TokenAccounts
from ml.llm.gateway_request import GatewayRequest, estimate_tokens, parse_request
from ml.llm.providers import make_provider, set_prompt_logging
from ml.llm.rate_limits import MAX_WAIT_S, LimitedBreaker, RateLimiter
from ml.llm.resilience import BreakerRecord, CircuitBreaker
from ml.llm.settings import LlmSettings
from ml.llm.types import (
    BudgetExceeded, Completion, LlmConfigError, LlmError, Message, Provider, RateLimited,
    StreamBroken, Usage,
)
from storage.errors import InvalidRequest, StorageError
from storage.llm_budget import LlmBudgetStore, Reservation, UsageRecord
from storage.llm_cache import LlmResponseCache, cache_key

log = logging.getLogger("ymera.llm.gateway")

NO_DEPLOYMENT: Final = "none"
NO_GROUP: Final = "-"
OK: Final = "ok"
CACHED: Final = "cached"


class GatewayMetrics(Protocol):
    """What the gateway reports as it works; label values are bounded (groups, deployments,
    tenants, error codes)."""

    def request_finished(self, group: str, deployment: str, outcome: str,
                         latency_s: float) -> None:
        """A call ended: `outcome` is "ok", "cached" or the error's code."""

    def tokens_used(self, group: str, tenant: str, input_tokens: int, output_tokens: int,
                    cost_usd: float) -> None: ...

    def budget_refused(self, group: str, tenant: str) -> None: ...

    def cache_lookup(self, group: str, hit: bool) -> None: ...

    def breaker_state(self, deployment: str, state: str) -> None: ...

    def fell_back(self, group: str, deployment: str) -> None:
        """A call was answered by `deployment`, not by its group's first deployment."""


class NoMetrics:
    """Metrics that go nowhere."""

    def request_finished(self, group: str, deployment: str, outcome: str,
                         latency_s: float) -> None: ...

    def tokens_used(self, group: str, tenant: str, input_tokens: int, output_tokens: int,
                    cost_usd: float) -> None: ...

    def budget_refused(self, group: str, tenant: str) -> None: ...

    def cache_lookup(self, group: str, hit: bool) -> None: ...

    def breaker_state(self, deployment: str, state: str) -> None: ...

    def fell_back(self, group: str, deployment: str) -> None: ...


class _OwnTimeout:
    """A provider held to its deployment's own `timeout_s` (one `ChatRequest` serves them all)."""

    def __init__(self, provider: Provider, timeout_s: float) -> None:
        self.provider = provider
        self.timeout_s = timeout_s

    async def complete(self, messages: Sequence[Message], *, max_tokens: int,
                       temperature: float, timeout_s: float) -> Completion:
        return await self.provider.complete(messages, max_tokens=max_tokens,
                                            temperature=temperature,
                                            timeout_s=min(timeout_s, self.timeout_s))

    def stream(self, messages: Sequence[Message], *, max_tokens: int, temperature: float,
               timeout_s: float) -> AsyncIterator[str | Completion]:
        return self.provider.stream(messages, max_tokens=max_tokens, temperature=temperature,
                                    timeout_s=min(timeout_s, self.timeout_s))


class LlmGateway:
    """Model calls over `providers` (one per configured deployment, by name)."""

    def __init__(self, settings: LlmSettings, providers: Mapping[str, Provider],
                 breaker: CircuitBreaker, budgets: LlmBudgetStore | None = None,
                 cache: LlmResponseCache | None = None, metrics: GatewayMetrics | None = None,
                 *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        missing = [d.name for d in settings.config.deployments if d.name not in providers]
        if missing:
            raise LlmConfigError(f"no provider for deployment(s) {', '.join(missing)}")
        self.settings = settings
        self.breaker = breaker
        self.budgets = budgets
        self.accounts = None if budgets is None else TokenAccounts(budgets, settings)
        self.cache = cache
        self.metrics: GatewayMetrics = metrics or NoMetrics()
        self.limiter = RateLimiter(settings.config.deployments)
        self._raw_providers = dict(providers)
        self._providers: dict[str, Provider] = {
            d.name: _OwnTimeout(providers[d.name], d.timeout_s)
            for d in settings.config.deployments}
        self._sleep = sleep
        self._routes = {group: settings.config.route(group) for group in settings.groups}
        set_prompt_logging(settings.log_prompts)

    @classmethod
    def from_settings(cls, settings: LlmSettings, breaker: CircuitBreaker,
                      budgets: LlmBudgetStore | None = None,
                      cache: LlmResponseCache | None = None,
                      metrics: GatewayMetrics | None = None,
                      environ: Mapping[str, str] | None = None) -> LlmGateway:
        """A gateway with the SDK provider of every deployment; keys are read here, now."""
        providers = {d.name: make_provider(d, environ) for d in settings.config.deployments}
        return cls(settings, providers, breaker, budgets, cache, metrics)

    async def flush(self) -> None:
        """Wait until the usage of every call answered so far is recorded."""
        if self.accounts is not None:
            await self.accounts.flush()

    async def aclose(self) -> None:
        """Record what is pending, then close the providers' HTTP clients."""
        if self.accounts is not None:
            await self.accounts.close()
        for provider in self._raw_providers.values():
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()

    # ----------------------------------------------------------------- calls

    async def complete(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The answer to `request` (see the module's docstring); raises `InvalidRequest`,
        `BudgetExceeded`, another `LlmError` (`NoDeploymentAnswered`, `BadModelRequest`, ...),
        or `StorageError` when the budget or breaker store fails."""
        started = time.perf_counter()
        call = self._parse(request, started)
        try:
            answer = await self._cached(call)
            if answer is None:
                answer = await self._call(call)
        except BaseException as error:
            self._failed(call, error, started)
            raise
        self._finished(call, answer, started)
        return answer

    async def _call(self, call: GatewayRequest) -> dict[str, Any]:
        reservation = await self._reserve(call)
        breaker = self._breaker_for(call)
        try:
            route = await self._route(call)
            completion = await call_with_fallback(
                route, self._providers, breaker, self.settings.retry, self._chat(call),
                sleep=self._sleep)
        except BaseException:
            await self._release(reservation)
            raise
        answer = await self._settle(call, reservation, breaker, completion, completion.usage)
        await self._remember(call, answer)
        return answer

    async def stream(self, request: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """`{"delta"}` items, then one `{"done"}` or `{"error"}` item (see the module's
        docstring); raises like `complete` before its first item."""
        started = time.perf_counter()
        call = self._parse(request, started)
        try:
            cached = await self._cached(call)
        except BaseException as error:
            self._failed(call, error, started)
            raise
        if cached is not None:
            self._finished(call, cached, started)
            if cached["text"]:
                yield {"delta": cached["text"]}
            yield {"done": cached}
            return
        async with contextlib.aclosing(self._stream(call, started)) as items:
            async for item in items:
                yield item

    async def _stream(self, call: GatewayRequest,
                      started: float) -> AsyncGenerator[dict[str, Any], None]:
        reservation: Reservation | None = None
        breaker = self._breaker_for(call)
        parts: list[str] = []
        deployment: str | None = None
        settled = False
        try:
            reservation = await self._reserve(call)
            route = await self._route(call)
            items = cast(AsyncGenerator[StreamItem, None], stream_with_fallback(
                route, self._providers, breaker, self.settings.retry, self._chat(call),
                sleep=self._sleep))
            async with contextlib.aclosing(items):  # its breaker report runs however we end
                async for item in items:
                    if isinstance(item, str):
                        deployment = next(reversed(breaker.grants), None)
                        parts.append(item)
                        yield {"delta": item}
                    elif isinstance(item, Completion):
                        settled = True
                        answer = await self._settle(call, reservation, breaker, item,
                                                    item.usage)
                        await self._remember(call, answer)
                        self._finished(call, answer, started)
                        yield {"done": answer}
                    else:
                        settled = True
                        await self._charge_partial(call, reservation, breaker, item, parts)
                        self._failed(call, item, started)
                        yield {"error": {"code": item.code, "message": item.message,
                                         "deployment": item.deployment}}
        except BaseException as error:
            if not settled:
                if parts:  # the client left mid-answer: what was streamed is charged
                    await self._charge_partial(call, reservation, breaker,
                                               StreamBroken("left", deployment), parts)
                else:
                    await self._release(reservation)
                self._failed(call, error, started)
            raise

    # ----------------------------------------------------------------- steps

    def _parse(self, request: Mapping[str, Any], started: float) -> GatewayRequest:
        try:
            return parse_request(request, self.settings)
        except InvalidRequest:
            self.metrics.request_finished(NO_GROUP, NO_DEPLOYMENT, InvalidRequest.code,
                                          time.perf_counter() - started)
            raise

    def _chat(self, call: GatewayRequest) -> ChatRequest:
        timeout_s = max(d.timeout_s for d in self._routes[call.group])
        return ChatRequest(call.messages, call.max_tokens, call.temperature, timeout_s)

    def _breaker_for(self, call: GatewayRequest) -> LimitedBreaker:
        return LimitedBreaker(self.breaker, self.limiter, call.budget_estimate,
                              self._breaker_changed)

    async def _breaker_changed(self, deployment: str, record: BreakerRecord) -> None:
        self.metrics.breaker_state(deployment, record.state)

    async def _route(self, call: GatewayRequest) -> list[str]:
        """The group's deployments in order, once one of them has room under its rate limits
        (waiting up to `MAX_WAIT_S` for it)."""
        route = [d.name for d in self._routes[call.group]]
        wait_s = min(self.limiter.wait_s(name, call.budget_estimate) for name in route)
        if wait_s > MAX_WAIT_S:
            raise RateLimited(f"every deployment of model group {call.group!r} is at its rate "
                              f"limit; try again in {wait_s:.1f} s", None, wait_s)
        if wait_s > 0:
            await self._sleep(wait_s)
        return route

    async def _cached(self, call: GatewayRequest) -> dict[str, Any] | None:
        if self.cache is None or call.cache_ttl_s is None:
            return None
        try:
            stored = await self.cache.get(call.tenant, self._cache_key(call))
        except StorageError as exc:
            log.warning("model cache unreadable, calling the model instead: %s", exc)
            stored = None
        self.metrics.cache_lookup(call.group, stored is not None)
        if not isinstance(stored, dict):
            return None
        return {**stored, "usage": None, "cost_usd": 0.0, "cached": True}

    async def _remember(self, call: GatewayRequest, answer: dict[str, Any]) -> None:
        if self.cache is None or call.cache_ttl_s is None:
            return
        try:
            await self.cache.put(call.tenant, self._cache_key(call), answer, call.cache_ttl_s)
        except StorageError as exc:
            log.warning("model answer not cached: %s", exc)

    @staticmethod
    def _cache_key(call: GatewayRequest) -> str:
        return cache_key(call.tenant, call.group, [(m.role, m.content) for m in call.messages],
                         {"max_tokens": call.max_tokens, "temperature": call.temperature})

    async def _reserve(self, call: GatewayRequest) -> Reservation | None:
        if self.accounts is None:
            return None
        try:
            return await self.accounts.reserve(call.tenant, call.budget_estimate)
        except BudgetExceeded:
            self.metrics.budget_refused(call.group, call.tenant)
            raise

    async def _release(self, reservation: Reservation | None) -> None:
        if self.accounts is not None:
            await self.accounts.release(reservation)

    async def _settle(self, call: GatewayRequest, reservation: Reservation | None,
                      breaker: LimitedBreaker, completion: Completion,
                      reported: Usage | None) -> dict[str, Any]:
        deployment = self.settings.config.deployment(completion.deployment)
        usage = reported or Usage(call.input_estimate, estimate_tokens(len(completion.text)))
        cost = await self._charge(call, reservation, breaker, deployment, completion.model,
                                  usage)
        if completion.deployment != self._routes[call.group][0].name:
            self.metrics.fell_back(call.group, completion.deployment)
        if self.settings.log_prompts:
            log.debug("model call of tenant %s: %r answered %r", call.tenant,
                      [m.content for m in call.messages], completion.text)
        return {"text": completion.text, "model": completion.model,
                "deployment": completion.deployment, "group": call.group,
                "finish_reason": completion.finish_reason,
                "usage": None if reported is None else {
                    "input_tokens": reported.input_tokens,
                    "output_tokens": reported.output_tokens},
                "cost_usd": cost, "cached": False}

    async def _charge_partial(self, call: GatewayRequest, reservation: Reservation | None,
                              breaker: LimitedBreaker, broken: StreamBroken,
                              parts: list[str]) -> None:
        name = broken.deployment or next(reversed(breaker.grants), None)
        if name not in breaker.grants:
            await self._release(reservation)
            return
        deployment = self.settings.config.deployment(name)
        usage = Usage(call.input_estimate, estimate_tokens(sum(len(p) for p in parts)))
        await self._charge(call, reservation, breaker, deployment, deployment.model, usage)

    async def _charge(self, call: GatewayRequest, reservation: Reservation | None,
                      breaker: LimitedBreaker, deployment: Deployment, model: str,
                      usage: Usage) -> float:
        """Count `usage` against the deployment's rate limit, the tenant's budget and usage,
        and the metrics; its cost."""
        cost = deployment.cost(usage)
        grant = breaker.grants.get(deployment.name)
        if grant is not None:
            self.limiter.settle(grant, usage.input_tokens + usage.output_tokens)
        self.metrics.tokens_used(call.group, call.tenant, usage.input_tokens,
                                 usage.output_tokens, cost)
        if self.accounts is not None:
            await self.accounts.charge(reservation, UsageRecord(
                tenant=call.tenant, deployment=deployment.name, model=model,
                input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, cost=cost,
                task_id=call.task_id))
        return cost

    def _finished(self, call: GatewayRequest, answer: Mapping[str, Any],
                  started: float) -> None:
        outcome = CACHED if answer.get("cached") else OK
        self.metrics.request_finished(call.group, str(answer["deployment"]), outcome,
                                      time.perf_counter() - started)

    def _failed(self, call: GatewayRequest, error: BaseException, started: float) -> None:
        if isinstance(error, LlmError):
            code, deployment = error.code, error.deployment or NO_DEPLOYMENT
            log.warning("model call of tenant %s to group %s failed: %s", call.tenant,
                        call.group, error.message)
        elif isinstance(error, (StorageError, InvalidRequest)):
            code, deployment = error.code, NO_DEPLOYMENT
        else:
            code, deployment = "cancelled", NO_DEPLOYMENT
        self.metrics.request_finished(call.group, deployment, code,
                                      time.perf_counter() - started)
