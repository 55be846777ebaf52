from __future__ import annotations

import dataclasses
import itertools

import pytest

from serve_apps.errors import Forbidden
from storage.auth_store import ROLES as STORED_ROLES
from serve_apps.permissions import (
    ALL_PERMISSIONS, CLI_ONLY_ROLES, ROLE_PERMISSIONS, ROLES, Principal, allows, permissions_of,
    require,
)

# The table as the API's contract states it, written out independently of the module.
READS = {"tasks:read", "agents:read", "route:query", "workflows:read", "llm:read",
         "knowledge:read", "inbox:read"}
SUBMITS = {"tasks:submit", "tasks:cancel", "tasks:feedback", "workflows:submit",
           "workflows:cancel", "workflows:plan", "knowledge:write", "inbox:write"}
OPERATES = {"tasks:requeue", "dead:read", "audit:read", "workflows:approve", "webhooks:read"}
ADMINISTERS = {"keys:manage", "users:manage", "webhooks:manage"}
PLATFORM = {"platform:scale", "platform:read", "llm:budget"}
EXPECTED = {
    "viewer": READS,
    "submitter": READS | SUBMITS,
    "operator": READS | SUBMITS | OPERATES,
    "admin": READS | SUBMITS | OPERATES | ADMINISTERS,
    "platform_admin": READS | SUBMITS | OPERATES | ADMINISTERS | PLATFORM,
}
TENANT_ROLES = ["viewer", "submitter", "operator", "admin"]
TABLE = [(role, permission, permission in EXPECTED[role])
         for role, permission in itertools.product(sorted(EXPECTED), sorted(ALL_PERMISSIONS))]


def test_the_table_names_every_role_and_permission() -> None:
    assert set(ROLES) == set(ROLE_PERMISSIONS) == set(EXPECTED) == set(STORED_ROLES)
    assert ALL_PERMISSIONS == EXPECTED["platform_admin"] and len(ALL_PERMISSIONS) == 26
    assert set().union(*ROLE_PERMISSIONS.values()) == ALL_PERMISSIONS


def test_each_role_includes_the_one_below() -> None:
    for lower, higher in itertools.pairwise([*TENANT_ROLES, "platform_admin"]):
        assert permissions_of(lower) < permissions_of(higher)


@pytest.mark.parametrize("role", ["viewer", "submitter"])
def test_only_operators_and_up_decide_workflow_approvals(role: str) -> None:
    assert not allows(role, "workflows:approve")
    assert all(allows(higher, "workflows:approve")
               for higher in ("operator", "admin", "platform_admin"))


@pytest.mark.parametrize("role", TENANT_ROLES)
def test_no_tenant_role_acts_on_what_every_tenant_shares(role: str) -> None:
    # scaling a pool or reading its processes and nodes reaches past the caller's tenant
    assert not permissions_of(role) & {"platform:scale", "platform:read"}
    assert CLI_ONLY_ROLES == {"platform_admin"}


@pytest.mark.parametrize(("role", "permission", "allowed"), TABLE)
def test_the_permission_table(role: str, permission: str, allowed: bool) -> None:
    principal = Principal(tenant="acme", role=role, subject="user:1")
    assert allows(role, permission) is allowed and principal.can(permission) is allowed
    if allowed:
        require(role, permission)
        principal.require(permission)
        return
    with pytest.raises(Forbidden) as caught:
        require(role, permission)
    assert permission in caught.value.message and role in caught.value.message
    assert caught.value.details == {"role": role, "permission": permission}


@pytest.mark.parametrize("role", ["root", "", "Admin", None])
def test_an_unknown_role_may_do_nothing(role: str) -> None:
    with pytest.raises(Forbidden):
        permissions_of(role)
    with pytest.raises(Forbidden):
        require(role, "tasks:read")
    assert not Principal(tenant="acme", role=role, subject="key:1").can("tasks:read")


@pytest.mark.parametrize("permission", ["tasks:sbumit", "tasks", "*", ""])
def test_naming_a_permission_that_does_not_exist_is_a_bug(permission: str) -> None:
    with pytest.raises(ValueError):
        require("admin", permission)
    with pytest.raises(ValueError):
        Principal(tenant="acme", role="admin", subject="user:1").can(permission)


def test_a_principal_is_frozen() -> None:
    principal = Principal(tenant="acme", role="viewer", subject="key:0f")
    with pytest.raises(dataclasses.FrozenInstanceError):
        principal.role = "admin"  # type: ignore[misc]
