"""Managing a tenant's users, and reading its audit log.

Guarantees:
- every route works within the caller's tenant: another tenant's user answers 404, exactly
  like one that does not exist, and the audit log holds only the caller's tenant's events;
  `scope=platform` reads the platform's log of shared actions (scaling pools), whose actor,
  request id and address only a `platform:read` caller sees;
- no response holds a password or a password hash;
- a new user's password meets the policy of `serve_apps.passwords`, its username and tenant
  counting as guessable words (else 400 naming the field, the rule and the estimator's advice);
- usernames are unique within the tenant (a clash is a 409 `conflict`); another tenant's user
  of the same name neither blocks the name nor is revealed;
- a caller cannot create a user with, or grant, a role above its own, nor change, disable or
  enable a user whose role is above its own (403); nobody grants `platform_admin` here (403:
  only `ymera admin` on storage does);
- a tenant keeps an enabled admin: demoting or disabling its last one is a 409 `conflict`;
- disabling a user revokes its refresh tokens, and its access tokens stop working: at once on
  the replica that disabled it, within `auth_cache_s` (5 s by default) on the others, which
  may use the user as they read it that long before; a role change applies the same way;
- creating a user, changing a role (`from`, `to`), disabling and enabling are audited as
  `user_created`, `role_changed`, `user_disabled` and `user_enabled`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from serve_apps.errors import Forbidden
from serve_apps.passwords import hash_password
from serve_apps.permissions import CLI_ONLY_ROLES, Principal
from serve_apps.routes.access import (
    PLATFORM_AUDIT_TENANT, ROLE_RANK, Caller, Services, audit, authorize, services,
)
from serve_apps.schemas import RoleBody, UserBody
from storage.auth_store import AuditEvent, User
from storage.errors import Conflict, NotFound

router = APIRouter(dependencies=[Depends(authorize)])

Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(max_length=200)]
AuditScope = Annotated[Literal["tenant", "platform"], Query(
    description="tenant: your tenant's log; platform: platform-wide actions (scaling the "
    "shared pools), whose actor only platform administrators see")]
PLATFORM_ACTOR = "platform_admin"


def _user_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "tenant": user.tenant, "username": user.username, "role": user.role,
            "disabled": user.disabled, "created_at": user.created_at.isoformat(),
            "updated_at": user.updated_at.isoformat()}


def _event_json(event: AuditEvent) -> dict[str, Any]:
    return {"id": event.id, "at": event.at.isoformat(), "actor": event.actor,
            "action": event.action, "target": event.target, "request_id": event.request_id,
            "client": event.client, "details": event.details}


def _check_may_grant(caller: Principal, role: str) -> None:
    if role in CLI_ONLY_ROLES:
        raise Forbidden(f"the role {role!r} is granted only with `ymera admin` on storage, "
                        "never over HTTP", {"role": role})
    if ROLE_RANK[role] > ROLE_RANK.get(caller.role, -1):
        raise Forbidden(f"a {caller.role} cannot grant the role {role!r}", {"role": role})


def _check_may_manage(caller: Principal, user: User) -> None:
    """`Forbidden` unless `user`'s role ranks no higher than the caller's."""
    if ROLE_RANK.get(user.role, len(ROLE_RANK)) > ROLE_RANK.get(caller.role, -1):
        raise Forbidden(f"a {caller.role} cannot manage a user with the role {user.role!r}",
                        {"user_id": user.id, "role": user.role})


async def _tenant_user(svc: Services, user_id: str, tenant: str) -> User:
    """The user `user_id` of `tenant`; `NotFound` for a missing user and another tenant's alike."""
    try:
        user = await svc.auth_store.user(user_id)
    except NotFound:
        user = None
    if user is None or user.tenant != tenant:
        raise NotFound(f"no user with id {user_id!r}", {"user_id": user_id})
    return user


async def _keep_an_admin(svc: Services, user: User, role: str, disabled: bool) -> None:
    """`Conflict` if giving `user` this role and state would leave its tenant no enabled admin."""
    stays_admin = role == "admin" and not disabled
    if user.role != "admin" or user.disabled or stays_admin:
        return
    others = [u for u in await svc.auth_store.list_users(user.tenant)
              if u.role == "admin" and not u.disabled and u.id != user.id]
    if not others:
        raise Conflict(f"user {user.username!r} is the tenant's last admin; make another "
                       "admin first", {"user_id": user.id})


@router.post("/users", status_code=201, tags=["users"], summary="Create a user in your tenant")
async def create_user(body: UserBody, request: Request, caller: Caller) -> dict[str, Any]:
    svc = services(request)
    _check_may_grant(caller, body.role)
    password_hash = await asyncio.to_thread(hash_password, body.password,
                                            (body.username, caller.tenant))
    user = await svc.auth_store.create_user(caller.tenant, body.username, password_hash,
                                            body.role)
    await audit(request, caller.tenant, caller.subject, "user_created", target=user.id,
                 details={"username": user.username, "role": user.role})
    return _user_json(user)


@router.get("/users", tags=["users"], summary="List your tenant's users (never a password)")
async def list_users(request: Request, caller: Caller) -> dict[str, Any]:
    users = await services(request).auth_store.list_users(caller.tenant)
    return {"users": [_user_json(u) for u in users]}


@router.post("/users/{user_id}/role", tags=["users"], summary="Change a user's role")
async def change_role(user_id: str, body: RoleBody, request: Request,
                      caller: Caller) -> dict[str, Any]:
    svc = services(request)
    _check_may_grant(caller, body.role)
    user = await _tenant_user(svc, user_id, caller.tenant)
    _check_may_manage(caller, user)
    if user.role == body.role:
        return _user_json(user)
    await _keep_an_admin(svc, user, body.role, user.disabled)
    changed = await svc.auth_store.set_role(user.id, body.role)
    svc.credentials.forget("user", user.id)
    await audit(request, caller.tenant, caller.subject, "role_changed", target=user.id,
                 details={"from": user.role, "to": changed.role})
    return _user_json(changed)


@router.post("/users/{user_id}/disable", tags=["users"],
             summary="Disable a user and end its sessions")
async def disable_user(user_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    svc = services(request)
    user = await _tenant_user(svc, user_id, caller.tenant)
    _check_may_manage(caller, user)
    await _keep_an_admin(svc, user, user.role, disabled=True)
    disabled = await svc.auth_store.set_disabled(user.id, True)
    svc.credentials.forget("user", user.id)
    revoked = await svc.auth_store.revoke_refresh_tokens(user.id)
    await audit(request, caller.tenant, caller.subject, "user_disabled", target=user.id,
                 details={"revoked_refresh_tokens": revoked})
    return _user_json(disabled)


@router.post("/users/{user_id}/enable", tags=["users"], summary="Enable a disabled user")
async def enable_user(user_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    svc = services(request)
    user = await _tenant_user(svc, user_id, caller.tenant)
    _check_may_manage(caller, user)
    enabled = await svc.auth_store.set_disabled(user.id, False)
    svc.credentials.forget("user", user.id)
    await audit(request, caller.tenant, caller.subject, "user_enabled", target=user.id)
    return _user_json(enabled)


@router.get("/audit", tags=["audit"],
            summary="Your tenant's audit log, or with scope=platform the platform's, newest "
            "first")
async def audit_log(request: Request, caller: Caller, limit: Limit = 100,
                    cursor: Cursor = None, scope: AuditScope = "tenant") -> dict[str, Any]:
    tenant = PLATFORM_AUDIT_TENANT if scope == "platform" else caller.tenant
    events, next_cursor = await services(request).auth_store.list_audit(
        tenant, limit=limit, cursor=cursor)
    if scope == "platform" and not caller.can("platform:read"):
        events = [_platform_event_for_tenants(e) for e in events]
    return {"events": [_event_json(e) for e in events], "next_cursor": next_cursor}


def _platform_event_for_tenants(event: AuditEvent) -> AuditEvent:
    """A platform action as a tenant may see it: what changed and when, not who (the acting
    user, request and address belong to some tenant)."""
    return dataclasses.replace(event, actor=PLATFORM_ACTOR, request_id=None, client=None)
