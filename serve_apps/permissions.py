"""Who may do what: four tenant roles and one platform role, an explicit permission table,
and the caller as a `Principal`.

    role            may
    viewer          read tasks, workflow runs and agents, ask the router where a task
                    would go, see the model groups and the tenant's token usage
                    (`llm:read`), search and ask the tenant's knowledge collections
                    (`knowledge:read`), read its agents' inboxes (`inbox:read`)
    submitter       viewer + submit, cancel and give feedback on tasks; submit, cancel and
                    retry workflow runs; plan workflows with the language model
                    (`workflows:plan`; running a plan also needs `workflows:submit`); add
                    and delete documents of knowledge collections (`knowledge:write`);
                    send messages to an agent type's inbox and acknowledge them
                    (`inbox:write`)
    operator        submitter + requeue dead tasks, read the dead-letter list, read the
                    audit log, approve or reject workflow steps (`workflows:approve`),
                    read the webhook subscriptions and their deliveries (`webhooks:read`)
    admin           everything within its tenant, including API keys and users, and the
                    webhook subscriptions, their secrets and redeliveries
                    (`webhooks:manage`)
    platform_admin  admin + platform-wide actions: scale the shared agent pools
                    (`platform:scale`), read replica pids, node ids and the platform
                    audit log (`platform:read`), set a tenant's token budget
                    (`llm:budget`)

Tenant roles act within their tenant only; what every tenant shares (pools, nodes) belongs to
`platform_admin`, a role that only `ymera admin` on storage grants (`CLI_ONLY_ROLES`), never
the HTTP API.

`ROLE_PERMISSIONS` is the whole truth: each role's permissions are spelled out, not derived,
so the table reads the same here, in the README and in an audit. Every check is deny-by-default:
an unknown role has no permissions and `require` refuses it with `Forbidden`. Naming a
permission that does not exist is a programming error (`ValueError`), never a silent denial.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from serve_apps.errors import Forbidden

ROLES: Final = ("platform_admin", "admin", "operator", "submitter", "viewer")
CLI_ONLY_ROLES: Final = frozenset({"platform_admin"})
"""Roles no HTTP caller can grant, to a user or a key: `ymera admin` on storage grants them."""

ALL_PERMISSIONS: Final = frozenset({
    "tasks:submit", "tasks:read", "tasks:cancel", "tasks:feedback", "tasks:requeue",
    "dead:read", "agents:read", "route:query",
    "workflows:submit", "workflows:read", "workflows:cancel", "workflows:approve",
    "workflows:plan", "keys:manage", "users:manage", "audit:read",
    "platform:scale", "platform:read", "llm:read", "llm:budget",
    "knowledge:read", "knowledge:write", "inbox:read", "inbox:write",
    "webhooks:read", "webhooks:manage",
})

ROLE_PERMISSIONS: Final[dict[str, frozenset[str]]] = {
    "viewer": frozenset({
        "tasks:read", "agents:read", "route:query", "workflows:read", "llm:read",
        "knowledge:read", "inbox:read",
    }),
    "submitter": frozenset({
        "tasks:read", "agents:read", "route:query", "workflows:read", "llm:read",
        "knowledge:read", "knowledge:write", "inbox:read", "inbox:write",
        "tasks:submit", "tasks:cancel", "tasks:feedback",
        "workflows:submit", "workflows:cancel", "workflows:plan",
    }),
    "operator": frozenset({
        "tasks:read", "agents:read", "route:query", "workflows:read", "llm:read",
        "knowledge:read", "knowledge:write", "inbox:read", "inbox:write",
        "tasks:submit", "tasks:cancel", "tasks:feedback",
        "workflows:submit", "workflows:cancel", "workflows:plan",
        "tasks:requeue", "dead:read", "audit:read", "workflows:approve", "webhooks:read",
    }),
    "admin": frozenset({
        "tasks:read", "agents:read", "route:query", "workflows:read", "llm:read",
        "knowledge:read", "knowledge:write", "inbox:read", "inbox:write",
        "tasks:submit", "tasks:cancel", "tasks:feedback",
        "workflows:submit", "workflows:cancel", "workflows:plan",
        "tasks:requeue", "dead:read", "audit:read", "workflows:approve", "webhooks:read",
        "keys:manage", "users:manage", "webhooks:manage",
    }),
    "platform_admin": frozenset({
        "tasks:read", "agents:read", "route:query", "workflows:read", "llm:read",
        "knowledge:read", "knowledge:write", "inbox:read", "inbox:write",
        "tasks:submit", "tasks:cancel", "tasks:feedback",
        "workflows:submit", "workflows:cancel", "workflows:plan",
        "tasks:requeue", "dead:read", "audit:read", "workflows:approve", "webhooks:read",
        "keys:manage", "users:manage", "webhooks:manage",
        "platform:scale", "platform:read", "llm:budget",
    }),
}


def permissions_of(role: str) -> frozenset[str]:
    """The permissions `role` grants; `Forbidden` for a role that does not exist."""
    try:
        return ROLE_PERMISSIONS[role]
    except (KeyError, TypeError):
        raise Forbidden(f"unknown role {role!r}", {"role": role}) from None


def allows(role: str, permission: str) -> bool:
    """Whether `role` grants `permission`; False for an unknown role."""
    _check_permission_name(permission)
    if not isinstance(role, str):
        return False
    return permission in ROLE_PERMISSIONS.get(role, frozenset())


def require(role: str, permission: str) -> None:
    """Nothing if `role` grants `permission`; `Forbidden` naming both if it does not."""
    _check_permission_name(permission)
    if permission not in permissions_of(role):
        raise Forbidden(f"role {role!r} lacks permission {permission!r}",
                        {"role": role, "permission": permission})


@dataclasses.dataclass(frozen=True)
class Principal:
    """The authenticated caller: its tenant, its role, and who it is ("user:<id>" or "key:<id>")."""

    tenant: str
    role: str
    subject: str

    def can(self, permission: str) -> bool:
        """Whether this caller's role grants `permission` (False for an unknown role)."""
        return allows(self.role, permission)

    def require(self, permission: str) -> None:
        """Nothing if this caller may use `permission`; `Forbidden` naming it and the role."""
        require(self.role, permission)


def _check_permission_name(permission: str) -> None:
    if permission not in ALL_PERMISSIONS:
        known = ", ".join(sorted(ALL_PERMISSIONS))
        raise ValueError(f"no such permission {permission!r}; one of: {known}")
