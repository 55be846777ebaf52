"""The orchestrator's side of the model gateway: what operators and tenants may ask about it.

    llm_status()                         model groups, deployments and their circuit breakers
    llm_usage(tenant)                    the tenant's token budget and what it used this period
    set_llm_budget(tenant, tokens, ...)  an operator's token budget for one tenant

Guarantees:
- With no model configured, `llm_status` says so (with the hint how to add one) and the other
  operations raise `NoModelConfigured`; nothing is stored.
- Every read and write names one tenant: a tenant's usage is never summed with another's.
- The gateway is found by name on every call (Ray restarts it; a kept handle could be stale);
  a gateway that does not answer is `PlatformUnavailable`, its own errors pass as themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.orchestrator_api import ray_errors_translated
from ml.llm.settings import NO_MODEL_HINT, NoModelConfigured
from storage.errors import InvalidRequest
from storage.example_store import check_tenant

if TYPE_CHECKING:
    from actors.config import OrchestratorConfig

BUDGET_PERIODS = ("month", "day", "total")


class LlmAdministration:
    """Model gateway operations of `actors.orchestrator.Orchestrator` (a mixin over its
    `config`)."""

    config: OrchestratorConfig

    async def _gateway_call(self, method: str, *args: Any) -> Any:
        if self.config.llm is None:
            raise NoModelConfigured(NO_MODEL_HINT)
        from actors.llm_gateway import find_llm_gateway  # imports Ray

        handle = find_llm_gateway(self.config.namespace)
        if handle is None:
            from actors.errors import PlatformUnavailable

            raise PlatformUnavailable("the model gateway is starting; try again shortly")
        with ray_errors_translated("the model gateway"):
            return await getattr(handle, method).remote(*args)

    def _models_configured(self) -> dict[str, Any]:
        """The model groups `ymera status` shows (their deployments in the order they are
        tried), or how to configure one. Read from the configuration: no gateway call."""
        if self.config.llm is None:
            return {"configured": False, "hint": NO_MODEL_HINT}
        config = self.config.llm.config
        return {"configured": True, "default_group": self.config.llm.default_group,
                "groups": {group: [{"name": d.name, "provider": d.provider, "model": d.model}
                                   for d in config.route(group)] for group in config.groups}}

    async def llm_status(self) -> dict[str, Any]:
        """Whether a model is configured, and if so its groups, deployments and breakers."""
        if self.config.llm is None:
            return {"configured": False, "hint": NO_MODEL_HINT}
        status = await self._gateway_call("status")
        return {"configured": True, **status}

    async def llm_usage(self, tenant: str) -> dict[str, Any]:
        """`tenant`'s budget this period and the tokens and cost of its model calls."""
        check_tenant(tenant)
        budget = await self._gateway_call("budget", tenant)
        usage = await self._gateway_call("usage", tenant, None)
        return {"tenant": tenant, "budget": budget, "usage": usage}

    async def set_llm_budget(self, tenant: str, limit_tokens: int | None,
                             period: str | None = None) -> dict[str, Any]:
        """Set `tenant`'s token budget (None: unlimited) per `period`; its new status."""
        check_tenant(tenant)
        if limit_tokens is not None and (isinstance(limit_tokens, bool)
                                         or not isinstance(limit_tokens, int)
                                         or limit_tokens < 1):
            raise InvalidRequest(f"limit_tokens must be a positive integer or null, not "
                                 f"{limit_tokens!r}", {"limit_tokens": limit_tokens})
        if period is not None and period not in BUDGET_PERIODS:
            raise InvalidRequest(f"period must be one of {', '.join(BUDGET_PERIODS)}, not "
                                 f"{period!r}", {"period": period})
        result: dict[str, Any] = await self._gateway_call("set_budget", tenant, limit_tokens,
                                                          period)
        return result
