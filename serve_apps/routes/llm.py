"""The model gateway over HTTP: what models there are, a tenant's token budget and usage, and an
operator's budget for one tenant.

    GET /llm                        model groups, deployments and their circuit breakers
    GET /llm/usage                  the caller's tenant: budget this period, tokens and cost
    PUT /llm/budgets/{tenant}       a tenant's token budget (platform administrators)

Guarantees: usage is always the caller's tenant's (the tenant comes from the credentials, never
from the request); a deployment is shown by name, group, provider, model and breaker state, never
its address or key; setting a budget takes `llm:budget` (platform administrators only: budgets
are what the platform's operator pays for) and is written to the platform's audit log. With no
model configured `GET /llm` says so with the hint how to add one, and the others answer 422
`no_model_configured`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from serve_apps.routes.access import PLATFORM_AUDIT_TENANT, Caller, audit, authorize, services
from serve_apps.schemas import StrictBody
from storage.example_store import check_tenant

router = APIRouter(tags=["models"], dependencies=[Depends(authorize)])

_SHOWN_DEPLOYMENT_FIELDS = ("name", "group", "provider", "model", "breaker")


class BudgetBody(StrictBody):
    """A tenant's token budget: `limit_tokens` per `period` (UTC), or null for unlimited
    (calls are still counted)."""

    limit_tokens: int | None = Field(ge=1, le=10**15)
    period: str | None = Field(default=None, pattern="^(month|day|total)$")


@router.get("/llm", summary="Model groups and deployments, and whether a model is configured")
async def llm_status(request: Request, caller: Caller) -> dict[str, Any]:
    status = await services(request).port.llm_status()
    if status.get("configured"):
        status["deployments"] = [
            {key: deployment[key] for key in _SHOWN_DEPLOYMENT_FIELDS if key in deployment}
            for deployment in status.get("deployments", [])]
    return status


@router.get("/llm/usage", summary="Your tenant's token budget and model usage this period")
async def llm_usage(request: Request, caller: Caller) -> dict[str, Any]:
    return await services(request).port.llm_usage(caller.tenant)


@router.put("/llm/budgets/{tenant}", summary="Set a tenant's token budget (platform admins)")
async def set_budget(tenant: str, body: BudgetBody, request: Request,
                     caller: Caller) -> dict[str, Any]:
    check_tenant(tenant)
    budget = await services(request).port.set_llm_budget(tenant, body.limit_tokens,
                                                          body.period)
    await audit(request, PLATFORM_AUDIT_TENANT, caller.subject, "llm_budget_set",
                target=tenant, details=body.model_dump())
    return budget
