"""The platform administrator over HTTP: scaling the shared pools, the pools' processes and
nodes, the platform's audit log, and that no HTTP caller can grant the role."""

from __future__ import annotations

import pytest

from serve_apps.passwords import hash_password
from serve_apps.routes.access import PLATFORM_AUDIT_TENANT
from tests.serve_apps.test_app_harness import PASSWORD, Platform, client, error_code, platform

__all__ = ["client", "platform"]

API = "/api/v1"
NEW_PASSWORD = "a long enough new password"


async def _platform_admin(platform: Platform, tenant: str = "acme") -> dict[str, str]:
    """A platform administrator of `tenant`, made on storage as `ymera admin` does."""
    user = await platform.auth_store.create_user(tenant, f"platform@{tenant}",
                                                 hash_password(PASSWORD), "platform_admin")
    token = platform.services().tokens.issue_access(user.id, user.tenant, user.role).token
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("role", ["operator", "admin"])
async def test_a_tenant_role_cannot_scale_the_shared_pools(platform: Platform, client,
                                                           role: str) -> None:
    before = {p["agent_type"]: p for p in (await platform.orchestrator.status())["pools"]}
    refused = await client.post(f"{API}/agents/sleeper/scale", json={"replicas": 3},
                                headers=platform.bearer("acme", role))
    assert refused.status_code == 403 and error_code(refused) == "forbidden", refused.text
    after = {p["agent_type"]: p for p in (await platform.orchestrator.status())["pools"]}
    assert after["sleeper"]["max_replicas"] == before["sleeper"]["max_replicas"]


async def test_a_platform_admin_scales_and_the_platform_log_names_no_tenant(
        platform: Platform, client) -> None:
    headers = await _platform_admin(platform)
    url = f"{API}/agents/sleeper/scale"
    scaled = await client.post(url, headers=headers, json={"min_replicas": 1, "max_replicas": 3})
    assert scaled.status_code == 200, scaled.text
    assert (scaled.json()["min_replicas"], scaled.json()["max_replicas"]) == (1, 3)
    assert scaled.json()["bounds_set_by"] == "operator"
    for body in ({"replicas": 2, "max_replicas": 3}, {"min_replicas": 3, "max_replicas": 2},
                 {}, {"max_replicas": 257}, {"reset": True, "replicas": 1}):
        refused = await client.post(url, headers=headers, json=body)
        assert refused.status_code == 400, (body, refused.text)
    reset = await client.post(url, headers=headers, json={"reset": True})
    assert reset.status_code == 200 and reset.json()["bounds_set_by"] == "config"

    platform_events, _ = await platform.auth_store.list_audit(PLATFORM_AUDIT_TENANT)
    event, reset_event = reversed([e for e in platform_events if e.action == "pool_scaled"])
    assert event.target == "sleeper" and event.details == {"min_replicas": 1, "max_replicas": 3}
    assert event.request_id and "acme" not in repr(event)
    acme_events, _ = await platform.auth_store.list_audit("acme")
    assert "pool_scaled" not in {e.action for e in acme_events}

    full = await client.get(f"{API}/audit", headers=headers, params={"scope": "platform"})
    assert full.status_code == 200, full.text
    assert [(e["action"], e["actor"]) for e in full.json()["events"]] == [
        ("pool_scaled", event.actor)] * 2
    assert reset_event.details == {"reset": True}
    # every tenant's pools changed, so every tenant's auditors see it, but not who did it
    seen = await client.get(f"{API}/audit", headers=platform.bearer("globex", "operator"),
                            params={"scope": "platform"})
    assert seen.status_code == 200, seen.text
    shown = seen.json()["events"][-1]
    assert (shown["action"], shown["target"], shown["details"]) == (
        "pool_scaled", "sleeper", {"min_replicas": 1, "max_replicas": 3})
    assert shown["actor"] == "platform_admin" and shown["request_id"] is None
    assert shown["client"] is None and event.actor.partition(":")[2] not in seen.text
    own = await client.get(f"{API}/audit", headers=platform.bearer("globex", "operator"))
    assert own.json()["events"] == []
    bad = await client.get(f"{API}/audit", headers=headers, params={"scope": "everything"})
    assert bad.status_code == 400 and error_code(bad) == "invalid_request"
    assert (await client.get(f"{API}/audit", headers=platform.bearer("acme", "viewer"),
                             params={"scope": "platform"})).status_code == 403


async def test_agents_shows_processes_and_nodes_only_to_platform_readers(
        platform: Platform, client) -> None:
    for role in ("viewer", "operator", "admin"):
        view = await client.get(f"{API}/agents", headers=platform.bearer("acme", role))
        assert view.status_code == 200, view.text
        pools = {p["agent_type"]: p for p in view.json()["pools"]}
        sleeper = pools["sleeper"]
        assert "replicas" not in sleeper and '"pid"' not in view.text
        assert "node_id" not in view.text
        assert sleeper["live"] == sleeper["desired"] == sleeper["ready"] == 1
        assert sleeper["in_flight"] == 0 and "queued" in view.json()
    full = await client.get(f"{API}/agents", headers=await _platform_admin(platform))
    (replica,) = {p["agent_type"]: p for p in full.json()["pools"]}["sleeper"]["replicas"]
    assert {"name", "pid", "node_id"} <= set(replica)


@pytest.mark.parametrize("role", ["admin", "platform_admin"])
async def test_nobody_grants_platform_admin_over_http(platform: Platform, client,
                                                      role: str) -> None:
    headers = (await _platform_admin(platform) if role == "platform_admin"
               else platform.bearer("acme", "admin"))
    created = await client.post(f"{API}/users", headers=headers, json={
        "username": "climber@acme", "password": NEW_PASSWORD, "role": "platform_admin"})
    assert created.status_code == 403 and error_code(created) == "forbidden", created.text
    key = await client.post(f"{API}/keys", headers=headers,
                            json={"name": "climb", "role": "platform_admin"})
    assert key.status_code == 403 and error_code(key) == "forbidden", key.text
    viewer = platform.users[("acme", "viewer")]
    promoted = await client.post(f"{API}/users/{viewer.id}/role", headers=headers,
                                 json={"role": "platform_admin"})
    assert promoted.status_code == 403 and error_code(promoted) == "forbidden"
    assert (await platform.auth_store.user(viewer.id)).role == "viewer"
    names = {u.username for u in await platform.auth_store.list_users("acme")}
    assert "climber@acme" not in names
    assert not [k for k in await platform.auth_store.list_api_keys("acme")
                if k.role == "platform_admin"]


async def test_a_tenant_admin_cannot_demote_or_disable_a_platform_admin(
        platform: Platform, client) -> None:
    await _platform_admin(platform)
    (target,) = [u for u in await platform.auth_store.list_users("acme")
                 if u.role == "platform_admin"]
    admin = platform.bearer("acme", "admin")
    demoted = await client.post(f"{API}/users/{target.id}/role", headers=admin,
                                json={"role": "viewer"})
    disabled = await client.post(f"{API}/users/{target.id}/disable", headers=admin)
    assert demoted.status_code == disabled.status_code == 403, (demoted.text, disabled.text)
    stored = await platform.auth_store.user(target.id)
    assert stored.role == "platform_admin" and not stored.disabled
