"""The console's workflow runs, batches, audit log, users and keys, and pool scaling, in
process; and that no console page or action answers anyone who has not signed in."""

from __future__ import annotations

import re

import httpx

from serve_apps.console import ROUTERS
from serve_apps.passwords import hash_password
from tests.serve_apps.console_support import CONSOLE, finished_task, signed_in
from tests.serve_apps.test_app_harness import PASSWORD, Platform, client, platform
from tests.serve_apps.test_app_workflows import awaiting_approval, run_when, step

__all__ = ["client", "platform"]

PUBLIC = {("GET", "/sign-in"), ("POST", "/sign-in"), ("GET", "/static/{name}")}


async def test_no_console_route_answers_without_a_session(client: httpx.AsyncClient) -> None:
    routes = {(method, route.path) for router in ROUTERS for route in router.routes
              for method in route.methods}
    assert len(routes - PUBLIC) >= 15
    for method, path in sorted(routes - PUBLIC):
        concrete = re.sub(r"\{[a-z_]+\}", "x", path)
        response = await client.request(method, f"{CONSOLE}{concrete}")
        assert response.status_code == 303, (method, path, response.status_code)
        assert response.headers["location"].startswith(f"{CONSOLE}/sign-in")


async def test_an_operator_approves_a_step_from_the_run_page(
        platform: Platform, client: httpx.AsyncClient) -> None:
    run_id = await awaiting_approval(platform, client)
    async with platform.client() as viewer:
        viewer_csrf = await signed_in(viewer, "acme", "viewer")
        seen = await viewer.get(f"{CONSOLE}/runs/{run_id}")
        assert seen.status_code == 200 and "awaiting_approval" in seen.text
        assert "/approve" not in seen.text  # no control for a viewer
        forged = await viewer.post(f"{CONSOLE}/runs/{run_id}/steps/check/approve",
                                   data={"csrf_token": viewer_csrf, "map_index": "-1"})
        assert forged.status_code == 403
    csrf = await signed_in(client, "acme", "operator")
    page = await client.get(f"{CONSOLE}/runs/{run_id}")
    assert f'action="/console/runs/{run_id}/steps/check/approve"' in page.text
    approved = await client.post(f"{CONSOLE}/runs/{run_id}/steps/check/approve", data={
        "csrf_token": csrf, "map_index": "-1", "comment": "looks right"})
    assert approved.status_code == 303, approved.text
    headers = platform.bearer("acme", "operator")
    run = await run_when(client, headers, run_id,
                         lambda r: step(r, "check")["decision"] is not None)
    assert step(run, "check")["decision"]["comment"] == "looks right"
    listed = await client.get(f"{CONSOLE}/runs")
    assert run_id[:12] in listed.text
    async with platform.client() as other:
        await signed_in(other, "globex", "admin")
        assert (await other.get(f"{CONSOLE}/runs/{run_id}")).status_code == 404


async def test_batches_audit_users_and_keys_are_the_tenants_own(
        platform: Platform, client: httpx.AsyncClient) -> None:
    task = await platform.orchestrator.accept(
        {"description": "batched", "agent_type": "sleeper", "payload": {},
         "tenant": "acme", "batch_id": "b-console"}, 5.0)
    assert task.status.value == "succeeded"
    await finished_task(platform, "globex")
    csrf = await signed_in(client, "acme", "admin")
    batch = await client.get(f"{CONSOLE}/batches?batch_id=b-console")
    assert batch.status_code == 200 and "succeeded" in batch.text
    async with platform.client() as other:
        await signed_in(other, "globex", "admin")
        assert (await other.get(f"{CONSOLE}/batches?batch_id=b-console")).status_code == 404
    audit = await client.get(f"{CONSOLE}/audit")
    assert audit.status_code == 200 and "login" in audit.text
    key = await platform.auth_store.create_api_key("acme", "ci-key", "viewer", "h" * 64)
    users = await client.get(f"{CONSOLE}/users")
    assert "operator@acme" in users.text and "operator@globex" not in users.text
    assert "ci-key" in users.text
    revoked = await client.post(f"{CONSOLE}/keys/{key.id}/revoke", data={"csrf_token": csrf})
    assert revoked.status_code == 303
    assert (await platform.auth_store.api_key(key.id)).revoked_at is not None  # type: ignore[union-attr]


async def test_an_operator_sees_no_user_admin_and_cannot_scale(
        platform: Platform, client: httpx.AsyncClient) -> None:
    csrf = await signed_in(client, "acme", "operator")
    assert (await client.get(f"{CONSOLE}/users")).status_code == 403
    overview = await client.get(CONSOLE)
    assert "/scale" not in overview.text and 'href="/console/users"' not in overview.text
    def desired(pools: list[dict]) -> dict[str, int]:
        return {pool["agent_type"]: pool["desired"] for pool in pools}

    before = desired((await platform.orchestrator.status())["pools"])
    refused = await client.post(f"{CONSOLE}/pools/sleeper/scale",
                                data={"csrf_token": csrf, "replicas": "3"})
    assert refused.status_code == 403
    assert desired((await platform.orchestrator.status())["pools"]) == before


async def test_a_tenant_admin_adds_a_user_disables_one_and_creates_a_key(
        platform: Platform, client: httpx.AsyncClient) -> None:
    csrf = await signed_in(client, "acme", "admin")
    added = await client.post(f"{CONSOLE}/users", data={
        "csrf_token": csrf, "username": "newcomer", "role": "viewer",
        "password": "a perfectly long passphrase 42"})
    assert added.status_code == 303, added.text
    user = await platform.auth_store.user_by_name("acme", "newcomer")
    assert user is not None and user.role == "viewer"
    assert await platform.auth_store.user_by_name("globex", "newcomer") is None
    too_high = await client.post(f"{CONSOLE}/users", data={
        "csrf_token": csrf, "username": "boss", "role": "platform_admin",
        "password": "a perfectly long passphrase 42"})
    assert too_high.status_code in (400, 403)
    assert await platform.auth_store.user_by_name("acme", "boss") is None

    victim = platform.users[("acme", "submitter")]
    disabled = await client.post(f"{CONSOLE}/users/{victim.id}/disable",
                                 data={"csrf_token": csrf})
    assert disabled.status_code == 303
    assert (await platform.auth_store.user(victim.id)).disabled
    other_tenants = platform.users[("globex", "submitter")]
    hidden = await client.post(f"{CONSOLE}/users/{other_tenants.id}/disable",
                               data={"csrf_token": csrf})
    assert hidden.status_code == 404
    assert not (await platform.auth_store.user(other_tenants.id)).disabled

    created = await client.post(f"{CONSOLE}/keys", data={
        "csrf_token": csrf, "name": "deploy bot", "role": "submitter",
        "expires_in_days": "30"})
    assert created.status_code == 200, created.text
    secret = re.search(r'<pre id="new-key">(ymk_[^<]+)</pre>', created.text)
    assert secret, created.text
    assert created.headers["cache-control"] == "no-store"
    usable = await client.get("/api/v1/tasks", headers={"X-API-Key": secret.group(1)})
    assert usable.status_code == 200
    listing = await client.get(f"{CONSOLE}/users")
    assert "deploy bot" in listing.text and secret.group(1) not in listing.text


async def test_a_platform_admin_scales_a_pool_from_the_overview(
        platform: Platform, client: httpx.AsyncClient) -> None:
    await platform.auth_store.create_user("acme", "platform_admin@acme",
                                          hash_password(PASSWORD), "platform_admin")
    csrf = await signed_in(client, "acme", "platform_admin")
    overview = await client.get(CONSOLE)
    assert 'action="/console/pools/sleeper/scale"' in overview.text
    scaled = await client.post(f"{CONSOLE}/pools/sleeper/scale",
                               data={"csrf_token": csrf, "replicas": "2"})
    assert scaled.status_code == 303, scaled.text
    pools = {p["agent_type"]: p for p in (await platform.orchestrator.status())["pools"]}
    assert pools["sleeper"]["desired"] == 2
    events, _ = await platform.auth_store.list_audit("_platform")
    assert [e.target for e in events if e.action == "pool_scaled"] == ["sleeper"]
    bad = await client.post(f"{CONSOLE}/pools/sleeper/scale",
                            data={"csrf_token": csrf, "replicas": "many"})
    assert bad.status_code == 400 and "replicas" in bad.text


async def test_a_tenant_admin_changes_another_users_role_with_the_apis_rules(
        platform: Platform, client: httpx.AsyncClient) -> None:
    csrf = await signed_in(client, "acme", "admin")
    me = platform.users[("acme", "admin")]
    viewer = platform.users[("acme", "viewer")]
    page = await client.get(f"{CONSOLE}/users")
    assert f'action="/console/users/{viewer.id}/role"' in page.text
    assert f'action="/console/users/{me.id}/role"' not in page.text  # not your own
    assert "<option>platform_admin</option>" not in page.text
    changed = await client.post(f"{CONSOLE}/users/{viewer.id}/role",
                                data={"csrf_token": csrf, "role": "operator"})
    assert changed.status_code == 303, changed.text
    assert (await platform.auth_store.user(viewer.id)).role == "operator"
    events, _ = await platform.auth_store.list_audit("acme")
    (entry,) = [e for e in events if e.action == "role_changed"]
    assert entry.target == viewer.id and entry.actor == f"user:{me.id}"
    assert entry.details == {"from": "viewer", "to": "operator"}

    refusals = [
        (viewer.id, {"csrf_token": csrf, "role": "platform_admin"}, 403),  # never grantable
        (viewer.id, {"csrf_token": csrf, "role": "overlord"}, 400),
        (viewer.id, {"role": "viewer"}, 403),  # no CSRF token
        (me.id, {"csrf_token": csrf, "role": "viewer"}, 403),  # your own role
        (platform.users[("globex", "viewer")].id, {"csrf_token": csrf, "role": "operator"},
         404),  # another tenant's user
    ]
    for user_id, form, status in refusals:
        refused = await client.post(f"{CONSOLE}/users/{user_id}/role", data=form)
        assert refused.status_code == status, (form, refused.text)
    assert (await platform.auth_store.user(viewer.id)).role == "operator"
    assert (await platform.auth_store.user(me.id)).role == "admin"
    assert (await platform.auth_store.user(platform.users[("globex", "viewer")].id)).role == \
        "viewer"
    events, _ = await platform.auth_store.list_audit("acme")
    assert len([e for e in events if e.action == "role_changed"]) == 1

    async with platform.client() as operator:
        operator_csrf = await signed_in(operator, "acme", "operator")
        forged = await operator.post(f"{CONSOLE}/users/{viewer.id}/role",
                                     data={"csrf_token": operator_csrf, "role": "admin"})
        assert forged.status_code == 403  # users:manage is an admin's
    assert (await platform.auth_store.user(viewer.id)).role == "operator"
