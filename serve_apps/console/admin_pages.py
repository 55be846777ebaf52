"""Workflow runs, batches, the audit log, users and API keys, and pool scaling in the console.

Guarantees:
- each page and action runs the API route that does the same thing (`routes.workflows`,
  `routes.tasks`, `routes.users`, `routes.auth`, `routes.agents`) with its permission
  (`console.access`): runs and batches of another tenant are a 404 page, users and keys are
  the caller's tenant's only, and a control is shown only when the role allows its action;
- a run's page shows each step's state, output and decision, and offers approve or reject on
  a step awaiting approval (`workflows:approve`), cancel of an unfinished run, and retry from
  a step of a failed or cancelled run (`workflows:cancel`, as the API);
- scaling a pool (`platform:scale`) is written to the platform's audit log, as the API does;
- a tenant admin changes another user's role with the API's route and rules (no role above
  your own, never `platform_admin`, the last admin stays; audited `role_changed`), never
  their own (403, nothing changed);
- a run's page draws the run's graph (`run_graph`) above its table of steps;
- a new API key's secret is shown once, on the page that answers its creation (sent with
  `Cache-Control: no-store`), and never again;
- every action takes the session's CSRF token.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import pydantic
from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from serve_apps.console import rendering
from serve_apps.console.run_graph import run_graph
from serve_apps.console.access import (
    CONSOLE_PREFIX, ConsoleCaller, ConsoleRoute, acting, form_fields,
)
from serve_apps.routes import agents as agent_routes
from serve_apps.routes import auth as auth_routes
from serve_apps.routes import tasks as task_routes
from serve_apps.routes import users as user_routes
from serve_apps.routes import workflows as workflow_routes
from serve_apps.routes.access import services
from serve_apps.errors import Forbidden
from serve_apps.schemas import ApiKeyBody, RoleBody, ScaleBody, UserBody
from serve_apps.workflow_schemas import DecisionBody, RetryBody
from storage.errors import InvalidRequest

GRANTABLE_ROLES: Final = ("viewer", "submitter", "operator", "admin")  # never platform_admin

router = APIRouter(route_class=ConsoleRoute)
RunReader = Annotated[ConsoleCaller, Depends(acting("GET", "/runs"))]
Approver = Annotated[ConsoleCaller, Depends(acting(
    "POST", "/runs/{run_id}/steps/{step_id}/approve"))]
RunCanceller = Annotated[ConsoleCaller, Depends(acting("POST", "/runs/{run_id}/cancel"))]
RunRetrier = Annotated[ConsoleCaller, Depends(acting("POST", "/runs/{run_id}/retry"))]
BatchReader = Annotated[ConsoleCaller, Depends(acting("GET", "/batches/{batch_id}"))]
AuditReader = Annotated[ConsoleCaller, Depends(acting("GET", "/audit"))]
UserManager = Annotated[ConsoleCaller, Depends(acting("GET", "/users"))]
UserCreator = Annotated[ConsoleCaller, Depends(acting("POST", "/users"))]
UserDisabler = Annotated[ConsoleCaller, Depends(acting("POST", "/users/{user_id}/disable"))]
UserEnabler = Annotated[ConsoleCaller, Depends(acting("POST", "/users/{user_id}/enable"))]
RoleChanger = Annotated[ConsoleCaller, Depends(acting("POST", "/users/{user_id}/role"))]
KeyCreator = Annotated[ConsoleCaller, Depends(acting("POST", "/keys"))]
KeyManager = Annotated[ConsoleCaller, Depends(acting("DELETE", "/keys/{key_id}"))]
Scaler = Annotated[ConsoleCaller, Depends(acting("POST", "/agents/{agent_type}/scale"))]


def _invalid(exc: pydantic.ValidationError) -> InvalidRequest:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"])
    return InvalidRequest(f"{field}: {first['msg']}", {"field": field})


def _back(address: str) -> Response:
    return RedirectResponse(address, status_code=303)


@router.get("/runs")
async def runs(request: Request, caller: RunReader) -> Response:
    status = request.query_params.get("status") or None
    cursor = request.query_params.get("cursor") or None
    page = await services(request).port.list_runs(tenant=caller.tenant, status=status,
                                                  limit=50, cursor=cursor)
    return rendering.render(request, "runs.html", caller, page=page.to_json(), status=status)


@router.get("/runs/{run_id}")
async def run_page(run_id: str, request: Request, caller: RunReader) -> Response:
    detail = (await services(request).port.get_run(run_id, tenant=caller.tenant)).to_json()
    return rendering.render(request, "run.html", caller, run=detail, graph=run_graph(detail))


@router.post("/runs/{run_id}/steps/{step_id}/{decision}")
async def decide(run_id: str, step_id: str, decision: str, request: Request,
                 caller: Approver) -> Response:
    form = await form_fields(request)
    try:
        body = DecisionBody(comment=form.get("comment") or None,
                            map_index=int(form.get("map_index", "-1") or -1))
    except pydantic.ValidationError as exc:
        raise _invalid(exc) from None
    except ValueError:
        raise InvalidRequest("map_index must be a whole number", {"field": "map_index"}) \
            from None
    if decision == "approve":
        await workflow_routes.approve_step(run_id, step_id, body, request, caller.principal)
    elif decision == "reject":
        await workflow_routes.reject_step(run_id, step_id, body, request, caller.principal)
    else:
        raise InvalidRequest("the decision is approve or reject", {"field": "decision"})
    return _back(f"{CONSOLE_PREFIX}/runs/{run_id}")


@router.post("/runs/{run_id}/cancel")
async def cancel_run(run_id: str, request: Request, caller: RunCanceller) -> Response:
    await workflow_routes.cancel_run(run_id, request, caller.principal)
    return _back(f"{CONSOLE_PREFIX}/runs/{run_id}")


@router.post("/runs/{run_id}/retry")
async def retry_run(run_id: str, request: Request, caller: RunRetrier) -> Response:
    form = await form_fields(request)
    try:
        body = RetryBody(from_step=form.get("from_step", ""))
    except pydantic.ValidationError as exc:
        raise _invalid(exc) from None
    await workflow_routes.retry_run(run_id, body, request, caller.principal)
    return _back(f"{CONSOLE_PREFIX}/runs/{run_id}")


@router.get("/batches")
async def batches(request: Request, caller: BatchReader) -> Response:
    batch_id = (request.query_params.get("batch_id") or "").strip()
    batch: dict[str, Any] | None = None
    if batch_id:
        if len(batch_id) > 64:
            raise InvalidRequest("batch_id is at most 64 characters", {"field": "batch_id"})
        batch = await task_routes.batch_status(batch_id, request, caller.principal)
    return rendering.render(request, "batches.html", caller, batch_id=batch_id, batch=batch)


@router.get("/audit")
async def audit_log(request: Request, caller: AuditReader) -> Response:
    platform = request.query_params.get("scope") == "platform"
    cursor = request.query_params.get("cursor") or None
    page = await user_routes.audit_log(request, caller.principal, limit=100, cursor=cursor,
                                       scope="platform" if platform else "tenant")
    scope = "platform" if platform else "tenant"
    return rendering.render(request, "audit.html", caller, page=page, scope=scope)


@router.get("/users")
async def users(request: Request, caller: UserManager) -> Response:
    listed = await user_routes.list_users(request, caller.principal)
    keys = (await auth_routes.list_keys(request, caller.principal)
            if caller.can("GET", "/keys") else None)
    return rendering.render(request, "users.html", caller, users=listed["users"],
                            keys=keys["keys"] if keys else None, roles=GRANTABLE_ROLES)


@router.post("/users")
async def create_user(request: Request, caller: UserCreator) -> Response:
    form = await form_fields(request)
    try:
        body = UserBody(username=form.get("username", ""), password=form.get("password", ""),
                        role=form.get("role", ""))
    except pydantic.ValidationError as exc:
        raise _invalid(exc) from None
    await user_routes.create_user(body, request, caller.principal)
    return _back(f"{CONSOLE_PREFIX}/users")


@router.post("/users/{user_id}/disable")
async def disable_user(user_id: str, request: Request, caller: UserDisabler) -> Response:
    await user_routes.disable_user(user_id, request, caller.principal)
    return _back(f"{CONSOLE_PREFIX}/users")


@router.post("/users/{user_id}/enable")
async def enable_user(user_id: str, request: Request, caller: UserEnabler) -> Response:
    await user_routes.enable_user(user_id, request, caller.principal)
    return _back(f"{CONSOLE_PREFIX}/users")


@router.post("/users/{user_id}/role")
async def change_role(user_id: str, request: Request, caller: RoleChanger) -> Response:
    """The API's role change (its rules and its `role_changed` audit entry); your own role is
    changed by another admin, never by yourself."""
    if caller.principal.subject == f"user:{user_id}":
        raise Forbidden("you cannot change your own role; ask another admin",
                        {"user_id": user_id})
    form = await form_fields(request)
    try:
        body = RoleBody(role=form.get("role", ""))
    except pydantic.ValidationError:
        raise InvalidRequest(f"role must be one of {', '.join(GRANTABLE_ROLES)}",
                             {"field": "role"}) from None
    await user_routes.change_role(user_id, body, request, caller.principal)
    return _back(f"{CONSOLE_PREFIX}/users")


@router.post("/keys")
async def create_key(request: Request, caller: KeyCreator) -> Response:
    """A new API key; its secret is on this answer's page only, never again."""
    form = await form_fields(request)
    try:
        days = form.get("expires_in_days") or ""
        body = ApiKeyBody(name=form.get("name", ""), role=form.get("role", ""),
                          expires_in_s=int(days) * 86400 if days else None)
    except ValueError:
        raise InvalidRequest("expires_in_days must be a whole number of days",
                             {"field": "expires_in_days"}) from None
    except pydantic.ValidationError as exc:
        raise _invalid(exc) from None
    created = await auth_routes.create_key(body, request, caller.principal)
    return rendering.render(request, "key_created.html", caller, key=created)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(key_id: str, request: Request, caller: KeyManager) -> Response:
    await auth_routes.revoke_key(key_id, request, caller.principal)
    return _back(f"{CONSOLE_PREFIX}/users")


@router.post("/pools/{agent_type}/scale")
async def scale(agent_type: str, request: Request, caller: Scaler) -> Response:
    form = await form_fields(request)
    try:
        body = ScaleBody(replicas=int(form.get("replicas", "")))
    except ValueError:
        raise InvalidRequest("replicas must be a whole number", {"field": "replicas"}) \
            from None
    except pydantic.ValidationError as exc:
        raise _invalid(exc) from None
    await agent_routes.scale(agent_type, body, request, caller.principal)
    return _back(CONSOLE_PREFIX)
