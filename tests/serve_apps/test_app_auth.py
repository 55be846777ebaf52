"""Authentication and authorisation over HTTP: logins, refresh rotation, API keys, the role
table on every route, and tokens that must be refused."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime, timedelta, timezone

import jwt
import pytest

from serve_apps.permissions import ROLE_PERMISSIONS
from serve_apps.routes import (
    agents, auth, inbox, knowledge, llm, plan, streams, tasks, users, webhooks, workflows,
)
from serve_apps.routes.access import PUBLIC_ROUTES, ROUTE_PERMISSIONS
from tests.serve_apps.test_app_harness import (
    PASSWORD, ROLES, SECRET, Platform, client, error_code, platform,
)

__all__ = ["client", "platform"]

API = "/api/v1"

# The tenant stream never ends; a resume id that is no number makes it answer 400, but only
# once the caller is authorised.
HEADERS = {("GET", "/stream"): {"Last-Event-ID": "not-a-number"}}
# One representative request per route in the permission table.
REQUESTS = {
    ("POST", "/keys"): {"name": "ci", "role": "viewer"},
    ("POST", "/tasks"): {"description": "x", "agent_type": "sleeper"},
    ("POST", "/tasks/{task_id}/feedback"): {"agent_type": "sleeper"},
    ("POST", "/route"): {"description": "x"},
    ("POST", "/agents/{agent_type}/scale"): {"replicas": 1},
    ("POST", "/plan"): {"request": "x"},
    ("PUT", "/llm/budgets/{tenant}"): {"limit_tokens": 1000},
    ("POST", "/knowledge/search"): {"query": "refunds"},
    ("POST", "/knowledge/answer"): {"question": "how long do refunds take?"},
    ("POST", "/webhooks"): {"url": "ftp://hooks.example.com/", "events": ["task.succeeded"]},
    ("PATCH", "/webhooks/{subscription_id}"): {"enabled": False},
    ("POST", "/inbox/{agent_type}"): {"body": {"n": 1}},
}


def test_every_mounted_route_has_a_permission_or_is_public() -> None:
    mounted = {(method, route.path) for router in (auth.public, auth.keys, tasks.router,
                                                   agents.router, users.router, streams.router,
                                                   workflows.router, plan.router, llm.router,
                                                   knowledge.router, webhooks.router,
                                                   inbox.router)
               for route in router.routes for method in route.methods}
    assert mounted <= set(ROUTE_PERMISSIONS) | PUBLIC_ROUTES
    assert set(ROUTE_PERMISSIONS) <= mounted


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("method, path", sorted(ROUTE_PERMISSIONS))
async def test_each_role_is_allowed_exactly_its_permissions(platform: Platform, client, role,
                                                            method, path) -> None:
    concrete = path.replace("{task_id}", "0" * 32).replace("{key_id}", "0" * 32) \
        .replace("{agent_type}", "sleeper").replace("{tenant}", "acme") \
        .replace("{subscription_id}", "0" * 32).replace("{delivery_id}", "0" * 32) \
        .replace("{message_id}", "0" * 32)
    response = await client.request(method, f"{API}{concrete}",
                                    json=REQUESTS.get((method, path)),
                                    headers={**platform.bearer("acme", role),
                                             **HEADERS.get((method, path), {})})
    if ROUTE_PERMISSIONS[(method, path)] in ROLE_PERMISSIONS[role]:
        assert response.status_code not in (401, 403), response.text
    else:
        assert response.status_code == 403 and error_code(response) == "forbidden"


async def test_login_failures_look_alike_and_are_audited(platform: Platform, client) -> None:
    wrong = await client.post(f"{API}/auth/token",
                              json={"tenant": "acme", "username": "admin@acme",
                                    "password": "wrong password!!"})
    unknown = await client.post(f"{API}/auth/token",
                                json={"tenant": "acme", "username": "nobody",
                                      "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"]
    assert wrong.headers["www-authenticate"] == "Bearer"
    ok = await client.post(f"{API}/auth/token",
                           json={"tenant": "acme", "username": "admin@acme",
                                 "password": PASSWORD})
    assert ok.status_code == 200
    events, _ = await platform.auth_store.list_audit("acme")
    assert [e.action for e in events] == ["login", "login_failed"]


async def test_disabled_user_cannot_log_in_or_use_a_token(platform: Platform, client) -> None:
    headers = platform.bearer("acme", "viewer")
    await platform.auth_store.set_disabled(platform.users[("acme", "viewer")].id, True)
    assert (await client.get(f"{API}/agents", headers=headers)).status_code == 401
    login = await client.post(f"{API}/auth/token",
                              json={"tenant": "acme", "username": "viewer@acme",
                                    "password": PASSWORD})
    assert login.status_code == 401


async def test_refresh_rotates_and_a_replay_revokes_the_family(platform: Platform,
                                                               client) -> None:
    login = (await client.post(f"{API}/auth/token",
                               json={"tenant": "acme", "username": "viewer@acme",
                                     "password": PASSWORD})).json()
    rotated = await client.post(f"{API}/auth/refresh",
                                json={"refresh_token": login["refresh_token"]})
    assert rotated.status_code == 200, rotated.text
    fresh = rotated.json()
    headers = {"Authorization": f"Bearer {fresh['access_token']}"}
    assert (await client.get(f"{API}/agents", headers=headers)).status_code == 200
    replay = await client.post(f"{API}/auth/refresh",
                               json={"refresh_token": login["refresh_token"]})
    assert replay.status_code == 401
    after = await client.post(f"{API}/auth/refresh",
                              json={"refresh_token": fresh["refresh_token"]})
    assert after.status_code == 401  # the replay revoked the newer token too
    access_as_refresh = await client.post(f"{API}/auth/refresh",
                                          json={"refresh_token": fresh["access_token"]})
    assert access_as_refresh.status_code == 401


async def test_api_key_create_use_list_revoke(platform: Platform, client) -> None:
    admin = platform.bearer("acme", "admin")
    created = await client.post(f"{API}/keys", headers=admin,
                                json={"name": "ci", "role": "submitter"})
    assert created.status_code == 201, created.text
    key, key_id = created.json()["key"], created.json()["id"]
    for headers in ({"Authorization": f"ApiKey {key}"}, {"X-API-Key": key}):
        used = await client.post(f"{API}/tasks", headers=headers,
                                 json={"description": "x", "agent_type": "sleeper"})
        assert used.status_code in (200, 202), used.text
        assert used.json()["tenant"] == "acme"
    listed = await client.get(f"{API}/keys", headers=admin)
    assert [k["id"] for k in listed.json()["keys"]] == [key_id]
    assert "key" not in listed.json()["keys"][0] and key not in listed.text
    other = await client.delete(f"{API}/keys/{key_id}", headers=platform.bearer("globex", "admin"))
    assert other.status_code == 404
    revoked = await client.delete(f"{API}/keys/{key_id}", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    refused = await client.get(f"{API}/agents", headers={"X-API-Key": key})
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
    wrong_secret = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert (await client.get(f"{API}/agents", headers={"X-API-Key": wrong_secret})
            ).status_code == 401
    events, _ = await platform.auth_store.list_audit("acme")
    assert {("key_created", key_id), ("key_revoked", key_id)} <= {(e.action, e.target)
                                                                  for e in events}


async def test_a_key_cannot_outrank_its_creator(platform: Platform, client) -> None:
    created = await client.post(f"{API}/keys", headers=platform.bearer("acme", "admin"),
                                json={"name": "ops", "role": "operator"})
    operator_key = {"X-API-Key": created.json()["key"]}
    response = await client.post(f"{API}/keys", headers=operator_key,
                                 json={"name": "escalate", "role": "admin"})
    assert response.status_code == 403


def _forged(claims_change: dict, header: dict | None = None, key: str = SECRET) -> str:
    now = datetime.now(timezone.utc)
    claims = {"iss": "ymera", "aud": "ymera-api", "sub": "x", "jti": "j", "typ": "access",
              "tenant": "acme", "role": "admin", "iat": int(now.timestamp()),
              "exp": int((now + timedelta(minutes=5)).timestamp()), **claims_change}
    return jwt.encode(claims, key, algorithm="HS256", headers=header)


def _alg_none(sub: str) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    now = int(datetime.now(timezone.utc).timestamp())
    return part({"alg": "none", "typ": "JWT"}) + "." + part({
        "iss": "ymera", "aud": "ymera-api", "sub": sub, "jti": "j", "typ": "access",
        "tenant": "acme", "role": "admin", "iat": now, "exp": now + 300}) + "."


@pytest.mark.parametrize("kind", ["expired", "tampered", "alg_none", "wrong_audience",
                                  "wrong_key", "garbage"])
async def test_bad_tokens_are_refused(platform: Platform, client, kind) -> None:
    sub = platform.users[("acme", "admin")].id
    past = datetime.now(timezone.utc) - timedelta(hours=1)
    token = {
        "expired": lambda: _forged({"sub": sub, "exp": int(past.timestamp()),
                                    "iat": int(past.timestamp()) - 60}),
        "tampered": lambda: _forged({"sub": sub, "role": "viewer"})[:-3] + "abc",
        "alg_none": lambda: _alg_none(sub),
        "wrong_audience": lambda: _forged({"sub": sub, "aud": "someone-else"}),
        "wrong_key": lambda: _forged({"sub": sub}, key="another-secret-" + "q7Z!" * 8),
        "garbage": lambda: "not-a-token",
    }[kind]()
    response = await client.get(f"{API}/agents", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401 and error_code(response) == "unauthenticated"
    assert token not in response.text


async def test_no_credentials_is_401(client) -> None:
    response = await client.get(f"{API}/tasks")
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"


async def test_a_key_revoked_through_another_replica_stops_working_within_the_cache_time(
        platform: Platform) -> None:
    # two apps over one storage stand for two API replicas, each with its own credential cache
    async with platform.client(auth_cache_s=0.5) as first, \
            platform.client(auth_cache_s=0.5) as second:
        admin = platform.bearer("acme", "admin")
        created = await first.post(f"{API}/keys", headers=admin,
                                   json={"name": "ci", "role": "viewer"})
        key, key_id = created.json()["key"], created.json()["id"]
        for replica in (first, second):  # each replica reads the key once, and keeps it
            assert (await replica.get(f"{API}/agents", headers={"X-API-Key": key})
                    ).status_code == 200
        assert (await first.delete(f"{API}/keys/{key_id}", headers=admin)).status_code == 200
        refused = await first.get(f"{API}/agents", headers={"X-API-Key": key})
        assert refused.status_code == 401  # at once where it was revoked
        deadline = asyncio.get_running_loop().time() + 5
        while (await second.get(f"{API}/agents", headers={"X-API-Key": key})
               ).status_code == 200:
            assert asyncio.get_running_loop().time() < deadline, "still accepted after 5 s"
            await asyncio.sleep(0.05)
        accepted_for = asyncio.get_running_loop().time() - (deadline - 5)
        assert accepted_for < 1.5


async def test_a_disabled_user_is_refused_at_once_by_the_replica_that_disabled_it(
        platform: Platform, client) -> None:
    viewer = platform.users[("acme", "viewer")]
    token = platform.bearer("acme", "viewer")
    assert (await client.get(f"{API}/agents", headers=token)).status_code == 200
    disabled = await client.post(f"{API}/users/{viewer.id}/disable",
                                 headers=platform.bearer("acme", "admin"))
    assert disabled.status_code == 200
    assert (await client.get(f"{API}/agents", headers=token)).status_code == 401
