"""User management and the audit log over HTTP: creating users, roles, disabling, the last
admin, tenant isolation, paging, and the 405 envelope."""

from __future__ import annotations

import pytest

from serve_apps.errors import Forbidden
from serve_apps.permissions import Principal
from serve_apps.routes.users import _check_may_grant
from tests.serve_apps.test_app_harness import (
    PASSWORD, Platform, client, error_code, platform,
)

__all__ = ["client", "platform"]

API = "/api/v1"
NEW_PASSWORD = "a long enough new password"


async def _login(client, username: str, password: str = PASSWORD):
    return await client.post(f"{API}/auth/token",
                             json={"tenant": "acme", "username": username,
                                   "password": password})


async def test_an_admin_creates_a_user_who_can_log_in(platform: Platform, client) -> None:
    admin = platform.bearer("acme", "admin")
    created = await client.post(f"{API}/users", headers=admin, json={
        "username": "new.submitter@acme", "password": NEW_PASSWORD, "role": "submitter"})
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["role"] == "submitter" and user["tenant"] == "acme" and not user["disabled"]
    assert "password" not in user and "password_hash" not in user
    login = await _login(client, "new.submitter@acme", NEW_PASSWORD)
    assert login.status_code == 200, login.text
    token = {"Authorization": f"Bearer {login.json()['access_token']}"}
    submitted = await client.post(f"{API}/tasks", headers=token,
                                  json={"description": "x", "agent_type": "sleeper"})
    assert submitted.status_code in (200, 202), submitted.text
    listed = await client.get(f"{API}/users", headers=admin)
    assert "new.submitter@acme" in {u["username"] for u in listed.json()["users"]}
    assert "argon2" not in listed.text and "password" not in listed.text
    events, _ = await platform.auth_store.list_audit("acme")
    assert ("user_created", user["id"]) in {(e.action, e.target) for e in events}


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"username": "short@acme", "password": "too short", "role": "viewer"}, 400,
     "invalid_request"),
    ({"username": "viewer@acme", "password": NEW_PASSWORD, "role": "viewer"}, 409, "conflict"),
    ({"username": "x@acme", "password": "aaaaaaaaaaaa", "role": "viewer"}, 400,
     "invalid_request"),
    ({"username": "x@acme", "password": NEW_PASSWORD, "role": "root"}, 400, "invalid_request"),
    ({"username": "x@acme", "password": NEW_PASSWORD, "role": "viewer", "tenant": "globex"},
     400, "invalid_request"),
])
async def test_a_bad_new_user_is_refused(platform: Platform, client, body, status,
                                         code) -> None:
    response = await client.post(f"{API}/users", headers=platform.bearer("acme", "admin"),
                                 json=body)
    assert response.status_code == status and error_code(response) == code, response.text
    assert NEW_PASSWORD not in response.text


def test_nobody_grants_a_role_above_their_own() -> None:
    operator = Principal(tenant="acme", role="operator", subject="user:x")
    _check_may_grant(operator, "operator")
    with pytest.raises(Forbidden):
        _check_may_grant(operator, "admin")


async def test_a_role_change_is_audited_and_applies_on_the_next_request(
        platform: Platform, client) -> None:
    admin = platform.bearer("acme", "admin")
    viewer_id = platform.users[("acme", "viewer")].id
    viewer = platform.bearer("acme", "viewer")  # issued before the change
    assert (await client.get(f"{API}/audit", headers=viewer)).status_code == 403
    promoted = await client.post(f"{API}/users/{viewer_id}/role", headers=admin,
                                 json={"role": "operator"})
    assert promoted.status_code == 200 and promoted.json()["role"] == "operator"
    assert (await client.get(f"{API}/audit", headers=viewer)).status_code == 200
    await client.post(f"{API}/users/{viewer_id}/role", headers=admin, json={"role": "viewer"})
    assert (await client.get(f"{API}/audit", headers=viewer)).status_code == 403
    events, _ = await platform.auth_store.list_audit("acme")
    changes = [e.details for e in events if e.action == "role_changed" and e.target == viewer_id]
    assert changes == [{"from": "operator", "to": "viewer"}, {"from": "viewer", "to": "operator"}]


async def test_disabling_ends_access_and_refresh_tokens(platform: Platform, client) -> None:
    admin = platform.bearer("acme", "admin")
    user_id = platform.users[("acme", "submitter")].id
    session = (await _login(client, "submitter@acme")).json()
    access = {"Authorization": f"Bearer {session['access_token']}"}
    assert (await client.get(f"{API}/agents", headers=access)).status_code == 200
    disabled = await client.post(f"{API}/users/{user_id}/disable", headers=admin)
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    assert (await client.get(f"{API}/agents", headers=access)).status_code == 401
    refresh = await client.post(f"{API}/auth/refresh",
                                json={"refresh_token": session["refresh_token"]})
    assert refresh.status_code == 401
    assert (await _login(client, "submitter@acme")).status_code == 401
    assert (await platform.auth_store.refresh_token(
        platform.services().tokens.verify_refresh(session["refresh_token"]).token_id)
            ).revoked_at is not None
    enabled = await client.post(f"{API}/users/{user_id}/enable", headers=admin)
    assert enabled.status_code == 200 and enabled.json()["disabled"] is False
    assert (await _login(client, "submitter@acme")).status_code == 200
    events, _ = await platform.auth_store.list_audit("acme")
    audited = [(e.action, e.details) for e in events if e.target == user_id]
    assert audited == [("user_enabled", None),
                       ("user_disabled", {"revoked_refresh_tokens": 1})]


async def test_the_last_admin_cannot_demote_or_disable_themselves(platform: Platform,
                                                                  client) -> None:
    admin = platform.bearer("acme", "admin")
    admin_id = platform.users[("acme", "admin")].id
    demote = await client.post(f"{API}/users/{admin_id}/role", headers=admin,
                               json={"role": "operator"})
    assert demote.status_code == 409 and error_code(demote) == "conflict"
    disable = await client.post(f"{API}/users/{admin_id}/disable", headers=admin)
    assert disable.status_code == 409
    assert (await platform.auth_store.user(admin_id)).role == "admin"
    second = await client.post(f"{API}/users", headers=admin, json={
        "username": "second.admin@acme", "password": NEW_PASSWORD, "role": "admin"})
    assert second.status_code == 201
    demote = await client.post(f"{API}/users/{admin_id}/role", headers=admin,
                               json={"role": "operator"})
    assert demote.status_code == 200
    assert (await client.get(f"{API}/users", headers=admin)).status_code == 403


async def test_another_tenants_user_is_not_found(platform: Platform, client) -> None:
    globex_admin = platform.bearer("globex", "admin")
    acme_viewer = platform.users[("acme", "viewer")].id
    for path, body in ((f"/users/{acme_viewer}/role", {"role": "operator"}),
                       (f"/users/{acme_viewer}/disable", None),
                       (f"/users/{acme_viewer}/enable", None),
                       ("/users/no-such-user/disable", None)):
        response = await client.post(f"{API}{path}", headers=globex_admin, json=body)
        assert response.status_code == 404 and error_code(response) == "not_found", path
    assert (await platform.auth_store.user(acme_viewer)).role == "viewer"
    listed = await client.get(f"{API}/users", headers=globex_admin)
    assert {u["tenant"] for u in listed.json()["users"]} == {"globex"}


@pytest.mark.parametrize("role", ["operator", "submitter", "viewer"])
async def test_only_admins_manage_users(platform: Platform, client, role) -> None:
    headers = platform.bearer("acme", role)
    target = platform.users[("acme", "viewer")].id
    for method, path, body in (
            ("GET", "/users", None),
            ("POST", "/users", {"username": "x@acme", "password": NEW_PASSWORD, "role": "viewer"}),
            ("POST", f"/users/{target}/role", {"role": "admin"}),
            ("POST", f"/users/{target}/disable", None)):
        response = await client.request(method, f"{API}{path}", headers=headers, json=body)
        assert response.status_code == 403 and error_code(response) == "forbidden", path


async def test_the_audit_log_pages_newest_first_within_the_tenant(platform: Platform,
                                                                  client) -> None:
    store = platform.auth_store
    for n in range(5):
        await store.audit("acme", "system", "probe", target=f"acme-{n}")
    await store.audit("globex", "system", "probe", target="globex-0")
    headers = platform.bearer("acme", "operator")
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await client.get(f"{API}/audit", headers=headers, params=params)
        assert page.status_code == 200, page.text
        assert len(page.json()["events"]) <= 2
        seen += page.json()["events"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert [e["target"] for e in seen] == [f"acme-{n}" for n in range(4, -1, -1)]
    ids = [e["id"] for e in seen]
    assert ids == sorted(ids, reverse=True)
    bad = await client.get(f"{API}/audit", headers=headers, params={"cursor": "nope"})
    assert bad.status_code == 400 and error_code(bad) == "invalid_request"
    too_many = await client.get(f"{API}/audit", headers=headers, params={"limit": 0})
    assert too_many.status_code == 400
    globex = await client.get(f"{API}/audit", headers=platform.bearer("globex", "admin"))
    assert [e["target"] for e in globex.json()["events"]] == ["globex-0"]


async def test_a_wrong_method_is_a_405_envelope_naming_the_allowed_ones(client) -> None:
    response = await client.delete(f"{API}/users")
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == "GET, POST"
    error = response.json()["error"]
    assert error["code"] == "method_not_allowed" and error["details"]["allowed"] == "GET, POST"
    assert error["request_id"] == response.headers["x-request-id"]
