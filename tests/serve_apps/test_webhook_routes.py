"""`/api/v1/webhooks...` through the app on the in-process platform: subscriptions made, read,
changed, rotated and deleted by tenant administrators only; secrets shown only by the answers
that make them; bad input refused with the field named and nothing stored (private addresses
included, unless the operator lists their network); deliveries listed, filtered, read with their
attempts and redelivered; the callback secret; `callback_url` on a task; and another tenant's
subscriptions and deliveries answering exactly like missing ones."""

from __future__ import annotations

import dataclasses
import socket
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from actors.config import WebhookSettings
from storage.messages import utcnow
from storage.models import webhook_deliveries_table as deliveries
from storage.webhook_outbox import Notification, enqueue
from storage.webhook_store import WebhookStore
from tests.serve_apps.test_app_harness import Platform, client, error_code, platform

__all__ = ["client", "platform"]

API = "/api/v1"
PUBLIC = "https://hooks.example.com/ymera"
ADDRESSES = {"hooks.example.com": "93.184.216.34", "other.example.com": "93.184.216.35",
             "internal.example.com": "10.1.2.3", "office.example.com": "192.168.4.5"}


async def fake_getaddrinfo(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
    """DNS for the tests: the names of `ADDRESSES`, and literal addresses as themselves."""
    address = ADDRESSES.get(host, host)
    try:
        socket.inet_pton(socket.AF_INET, address)
    except OSError:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]


@pytest.fixture(autouse=True)
def dns(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform.orchestrator, "webhook_address_lookup", fake_getaddrinfo)


def store(platform: Platform) -> WebhookStore:
    return WebhookStore(platform.orchestrator.lifecycle.store.engine)


async def subscribe(client, platform: Platform, tenant: str = "acme", **body: Any
                    ) -> dict[str, Any]:
    response = await client.post(f"{API}/webhooks", headers=platform.bearer(tenant, "admin"),
                                 json={"url": PUBLIC, "events": ["task.succeeded"], **body})
    assert response.status_code == 201, response.text
    return response.json()


async def listed(client, platform: Platform, tenant: str = "acme") -> list[dict[str, Any]]:
    response = await client.get(f"{API}/webhooks", headers=platform.bearer(tenant, "admin"))
    assert response.status_code == 200, response.text
    return response.json()["webhooks"]


# ------------------------------------------------------------------ subscriptions


async def test_an_admin_subscribes_and_sees_the_secret_only_once(platform: Platform,
                                                                 client) -> None:
    created = await subscribe(client, platform, events=["task.*"], description="tickets",
                              agent_type="sleeper")
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert created["events"] == ["task.succeeded", "task.failed", "task.dead",
                                 "task.cancelled"]
    assert (created["url"], created["agent_type"], created["enabled"]) == \
        (PUBLIC, "sleeper", True)
    assert created["created_by"] == f"user:{platform.users[('acme', 'admin')].id}"

    shown = await client.get(f"{API}/webhooks/{created['id']}",
                             headers=platform.bearer("acme", "operator"))
    assert shown.status_code == 200
    everything = [shown.text, str(await listed(client, platform))]
    events, _ = await platform.auth_store.list_audit("acme")
    everything.append(str([dataclasses.asdict(e) for e in events]))
    assert not any(created["secret"] in text for text in everything)
    assert "secret" not in shown.json()
    assert [e.action for e in events] == ["webhook_created"]
    assert await store(platform).signing_secrets("acme", created["id"]) == [created["secret"]]


@pytest.mark.parametrize("body, field, words", [
    ({"events": ["task.finished"]}, "events", "unknown event kind 'task.finished'"),
    ({"events": []}, "body.events", "at least 1"),
    ({"url": "ftp://hooks.example.com/x"}, "url", "https:// or http://"),
    ({"url": "https://user:pw@hooks.example.com/"}, "url", "credentials"),
    ({"url": "https://internal.example.com/hook"}, "url", "10.1.2.3, a private address"),
    ({"url": "http://127.0.0.1:9000/hook"}, "url", "loopback"),
    ({"url": "https://nowhere.invalid/"}, "url", "does not resolve"),
    ({"agent_type": "no_such_type"}, "agent_type", "no agent type 'no_such_type'"),
    ({"colour": "blue"}, "body.colour", "Extra inputs"),
])
async def test_bad_subscriptions_are_refused_naming_the_field_and_nothing_is_stored(
        platform: Platform, client, body: dict[str, Any], field: str, words: str) -> None:
    response = await client.post(f"{API}/webhooks", headers=platform.bearer("acme", "admin"),
                                 json={"url": PUBLIC, "events": ["task.succeeded"], **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["details"]["field"] == field
    assert words in error["message"]
    assert await listed(client, platform) == []


async def test_networks_the_operator_lists_are_allowed_and_no_other(
        platform: Platform, client, monkeypatch: pytest.MonkeyPatch) -> None:
    orchestrator = platform.orchestrator
    monkeypatch.setattr(orchestrator, "config", dataclasses.replace(
        orchestrator.config, webhooks=WebhookSettings(allowed_networks=("10.1.0.0/16",))))
    allowed = await subscribe(client, platform, url="https://internal.example.com/hook")
    assert allowed["url"] == "https://internal.example.com/hook"
    refused = await client.post(f"{API}/webhooks", headers=platform.bearer("acme", "admin"),
                                json={"url": "https://office.example.com/",
                                      "events": ["*"]})
    assert refused.status_code == 400 and "192.168.4.5" in refused.json()["error"]["message"]
    assert [w["id"] for w in await listed(client, platform)] == [allowed["id"]]


@pytest.mark.parametrize("role", ["viewer", "submitter", "operator"])
async def test_only_tenant_admins_manage_subscriptions(platform: Platform, client,
                                                       role: str) -> None:
    created = await subscribe(client, platform)
    headers = platform.bearer("acme", role)
    attempts = [
        await client.post(f"{API}/webhooks", headers=headers,
                          json={"url": PUBLIC, "events": ["*"]}),
        await client.patch(f"{API}/webhooks/{created['id']}", headers=headers,
                           json={"enabled": False}),
        await client.post(f"{API}/webhooks/{created['id']}/rotate-secret", headers=headers),
        await client.delete(f"{API}/webhooks/{created['id']}", headers=headers),
        await client.get(f"{API}/webhooks/callback-secret", headers=headers),
    ]
    assert [r.status_code for r in attempts] == [403] * 5
    reading = await client.get(f"{API}/webhooks", headers=headers)
    assert reading.status_code == (200 if role == "operator" else 403)
    assert await listed(client, platform) == [{k: v for k, v in created.items()
                                               if k != "secret"}]


async def test_a_change_touches_only_the_fields_given(platform: Platform, client) -> None:
    created = await subscribe(client, platform, agent_type="sleeper", description="tickets")
    headers = platform.bearer("acme", "admin")
    path = f"{API}/webhooks/{created['id']}"
    disabled = await client.patch(path, headers=headers, json={"enabled": False})
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["enabled"] is False
    assert {k: disabled.json()[k] for k in ("url", "events", "agent_type", "description")} == \
        {"url": PUBLIC, "events": ["task.succeeded"], "agent_type": "sleeper",
         "description": "tickets"}
    moved = await client.patch(path, headers=headers, json={
        "url": "https://other.example.com/x", "agent_type": None, "events": ["run.*"]})
    assert moved.status_code == 200, moved.text
    assert (moved.json()["url"], moved.json()["agent_type"], moved.json()["events"]) == \
        ("https://other.example.com/x", None, ["run.succeeded", "run.failed", "run.cancelled"])

    before = (await client.get(path, headers=headers)).json()
    for body, field in (({"url": "https://internal.example.com/"}, "url"),
                        ({"url": None}, "body.url"), ({"events": ["nope"]}, "events"),
                        ({}, "body"), ({"enabled": "no"}, "body.enabled")):
        refused = await client.patch(path, headers=headers, json=body)
        assert refused.status_code == 400, (body, refused.text)
        assert refused.json()["error"]["details"]["field"] == field, body
    assert (await client.get(path, headers=headers)).json() == before
    missing = await client.patch(f"{API}/webhooks/wh_{'0' * 24}", headers=headers,
                                 json={"enabled": True})
    assert missing.status_code == 404 and error_code(missing) == "not_found"


async def test_rotation_gives_a_new_secret_and_the_old_one_signs_during_the_overlap(
        platform: Platform, client) -> None:
    created = await subscribe(client, platform)
    headers = platform.bearer("acme", "admin")
    rotated = await client.post(f"{API}/webhooks/{created['id']}/rotate-secret",
                                headers=headers, json={"overlap_s": 3600})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != created["secret"]
    expires = datetime.fromisoformat(rotated.json()["previous_secret_expires_at"])
    assert abs((expires - utcnow()) - timedelta(hours=1)) < timedelta(minutes=1)
    assert await store(platform).signing_secrets("acme", created["id"]) == \
        [new, created["secret"]]

    at_once = await client.post(f"{API}/webhooks/{created['id']}/rotate-secret",
                                headers=headers, json={"overlap_s": 0})
    assert await store(platform).signing_secrets("acme", created["id"]) == \
        [at_once.json()["secret"]]
    too_long = await client.post(f"{API}/webhooks/{created['id']}/rotate-secret",
                                 headers=headers, json={"overlap_s": 10**9})
    assert too_long.status_code == 400
    assert too_long.json()["error"]["details"]["field"] == "body.overlap_s"
    shown = await client.get(f"{API}/webhooks/{created['id']}", headers=headers)
    assert new not in shown.text and at_once.json()["secret"] not in shown.text


async def test_another_tenants_subscription_is_missing_and_stays_as_it_was(
        platform: Platform, client) -> None:
    created = await subscribe(client, platform)
    other = platform.bearer("globex", "admin")
    path = f"{API}/webhooks/{created['id']}"
    answers = [await client.get(path, headers=other),
               await client.patch(path, headers=other, json={"enabled": False}),
               await client.post(f"{path}/rotate-secret", headers=other),
               await client.delete(path, headers=other)]
    assert [r.status_code for r in answers] == [404] * 4
    assert all(created["id"] in r.json()["error"]["message"] for r in answers)
    assert await listed(client, platform, "globex") == []
    assert await listed(client, platform) == [{k: v for k, v in created.items()
                                               if k != "secret"}]
    assert await store(platform).signing_secrets("acme", created["id"]) == [created["secret"]]


# ------------------------------------------------------------------ deliveries


async def notify(platform: Platform, *notifications: Notification) -> None:
    """Commit `notifications` through the outbox, as the orchestrator's writes do, due only
    tomorrow: the platform's delivery actor leaves them to the test."""
    now = utcnow()
    async with store(platform)._transaction("test notifications") as connection:
        await enqueue(connection, list(notifications), now, 3600.0)
        await connection.execute(update(deliveries).values(
            next_attempt_at=now + timedelta(days=1)))


def finished(task_id: str, tenant: str = "acme", kind: str = "task.succeeded") -> Notification:
    return Notification(tenant, kind, {"task_id": task_id, "tenant": tenant,
                                       "status": kind.split(".")[1], "result": {"n": 1}},
                        task_id=task_id, agent_type="sleeper")


async def test_deliveries_are_listed_newest_first_filtered_and_paged(platform: Platform,
                                                                     client) -> None:
    tickets = await subscribe(client, platform, events=["task.*"])
    audit = await subscribe(client, platform, url="https://other.example.com/a",
                            events=["task.failed"])
    await notify(platform, finished("t1"), finished("t2", kind="task.failed"),
                 finished("t3"), finished("g1", tenant="globex"))
    headers = platform.bearer("acme", "operator")

    async def deliveries(**query: Any) -> list[dict[str, Any]]:
        response = await client.get(f"{API}/webhooks/deliveries", headers=headers,
                                    params=query)
        assert response.status_code == 200, response.text
        return response.json()["deliveries"]

    every = await deliveries()
    assert [(d["task_id"], d["subscription_id"]) for d in every] == [
        ("t3", tickets["id"]), ("t2", audit["id"]), ("t2", tickets["id"]),
        ("t1", tickets["id"])]
    assert all(d["id"].startswith("msg_") and d["status"] == "pending" for d in every)
    assert every[0]["payload"]["type"] == "task.succeeded"
    assert every[0]["payload"]["data"]["result"] == {"n": 1}
    assert [d["task_id"] for d in await deliveries(task_id="t2")] == ["t2", "t2"]
    assert [d["task_id"] for d in await deliveries(subscription_id=audit["id"])] == ["t2"]
    assert [d["task_id"] for d in await deliveries(event_kind="task.succeeded")] == \
        ["t3", "t1"]
    first = await client.get(f"{API}/webhooks/deliveries", headers=headers,
                             params={"limit": 3})
    assert len(first.json()["deliveries"]) == 3 and first.json()["next_cursor"]
    rest = await deliveries(limit=3, cursor=first.json()["next_cursor"])
    assert [d["id"] for d in rest] == [every[3]["id"]]

    await store(platform).record_attempt(every[3]["id"], number=1, at=utcnow(),
                                         status_code=410, error="HTTP 410",
                                         response_excerpt="gone", duration_ms=12.5,
                                         outcome="failed")
    assert [d["id"] for d in await deliveries(status="failed")] == [every[3]["id"]]
    for query, field in (({"status": "lost"}, "query.status"),
                         ({"event_kind": "task.finished"}, "event_kind"),
                         ({"limit": 0}, "query.limit")):
        refused = await client.get(f"{API}/webhooks/deliveries", headers=headers, params=query)
        assert refused.status_code == 400 and \
            refused.json()["error"]["details"]["field"] == field, query
    viewer = await client.get(f"{API}/webhooks/deliveries",
                              headers=platform.bearer("acme", "viewer"))
    assert viewer.status_code == 403


async def test_a_failed_delivery_shows_its_attempts_and_is_redelivered_under_its_id(
        platform: Platform, client) -> None:
    await subscribe(client, platform)
    await notify(platform, finished("t1"))
    headers = platform.bearer("acme", "admin")
    page = await client.get(f"{API}/webhooks/deliveries", headers=headers)
    delivery_id = page.json()["deliveries"][0]["id"]
    webhooks = store(platform)
    await webhooks.record_attempt(delivery_id, number=1, at=utcnow(), status_code=500,
                                  error="HTTP 500", response_excerpt="oops", duration_ms=8.0,
                                  outcome="retry", next_attempt_at=utcnow())
    await webhooks.record_attempt(delivery_id, number=2, at=utcnow(), status_code=404,
                                  error="HTTP 404", response_excerpt="no such hook",
                                  duration_ms=9.0, outcome="failed")
    shown = await client.get(f"{API}/webhooks/deliveries/{delivery_id}", headers=headers)
    assert shown.status_code == 200, shown.text
    assert shown.json()["status"] == "failed" and shown.json()["attempts"] == [
        {"delivery_id": delivery_id, "number": 1, "at": shown.json()["attempts"][0]["at"],
         "status_code": 500, "error": "HTTP 500", "response_excerpt": "oops",
         "duration_ms": 8.0},
        {"delivery_id": delivery_id, "number": 2, "at": shown.json()["attempts"][1]["at"],
         "status_code": 404, "error": "HTTP 404", "response_excerpt": "no such hook",
         "duration_ms": 9.0}]

    operator = await client.post(f"{API}/webhooks/deliveries/{delivery_id}/redeliver",
                                 headers=platform.bearer("acme", "operator"))
    assert operator.status_code == 403
    again = await client.post(f"{API}/webhooks/deliveries/{delivery_id}/redeliver",
                              headers=headers)
    assert again.status_code == 200, again.text
    assert (again.json()["id"], again.json()["status"]) == (delivery_id, "pending")
    expires = datetime.fromisoformat(again.json()["expires_at"])
    assert expires - utcnow() > timedelta(hours=23)  # the configured retry period, afresh
    events, _ = await platform.auth_store.list_audit("acme")
    assert events[0].action == "webhook_redelivered" and events[0].target == delivery_id


async def test_another_tenants_deliveries_are_missing_and_stay_as_they_were(
        platform: Platform, client) -> None:
    await subscribe(client, platform)
    await notify(platform, finished("t1"))
    page = await client.get(f"{API}/webhooks/deliveries", headers=platform.bearer("acme",
                                                                                   "admin"))
    delivery_id = page.json()["deliveries"][0]["id"]
    await store(platform).record_attempt(delivery_id, number=1, at=utcnow(), status_code=400,
                                         error="HTTP 400", response_excerpt=None,
                                         duration_ms=1.0, outcome="failed")
    other = platform.bearer("globex", "admin")
    listing = await client.get(f"{API}/webhooks/deliveries", headers=other)
    assert listing.json() == {"deliveries": [], "next_cursor": None}
    read = await client.get(f"{API}/webhooks/deliveries/{delivery_id}", headers=other)
    redeliver = await client.post(f"{API}/webhooks/deliveries/{delivery_id}/redeliver",
                                  headers=other)
    assert (read.status_code, redeliver.status_code) == (404, 404)
    kept, _ = await store(platform).get_delivery("acme", delivery_id)
    assert kept.status == "failed"


async def test_deleting_a_subscription_fails_its_pending_deliveries(platform: Platform,
                                                                    client) -> None:
    created = await subscribe(client, platform)
    await notify(platform, finished("t1"))
    headers = platform.bearer("acme", "admin")
    deleted = await client.delete(f"{API}/webhooks/{created['id']}", headers=headers)
    assert deleted.status_code == 200 and deleted.json() == {"id": created["id"],
                                                             "deleted": True}
    gone = await client.get(f"{API}/webhooks/{created['id']}", headers=headers)
    assert gone.status_code == 404
    page = await client.get(f"{API}/webhooks/deliveries", headers=headers)
    assert [(d["status"], d["last_error"]) for d in page.json()["deliveries"]] == \
        [("failed", "subscription deleted")]


# ------------------------------------------------------------------ callbacks


async def test_the_callback_secret_is_made_once_and_rotated_with_an_overlap(
        platform: Platform, client) -> None:
    headers = platform.bearer("acme", "admin")
    first = await client.get(f"{API}/webhooks/callback-secret", headers=headers)
    assert first.status_code == 200, first.text
    secret = first.json()["secret"]
    assert secret.startswith("whsec_") and first.json()["tenant"] == "acme"
    again = await client.get(f"{API}/webhooks/callback-secret", headers=headers)
    assert again.json()["secret"] == secret
    other = await client.get(f"{API}/webhooks/callback-secret",
                             headers=platform.bearer("globex", "admin"))
    assert other.json()["secret"] != secret

    rotated = await client.post(f"{API}/webhooks/callback-secret", headers=headers)
    assert rotated.status_code == 200 and rotated.json()["rotated"] is True
    assert await store(platform).signing_secrets("acme", None) == \
        [rotated.json()["secret"], secret]
    events, _ = await platform.auth_store.list_audit("acme")
    assert [e.action for e in events] == ["callback_secret_rotated", "callback_secret_read",
                                          "callback_secret_read"]
    assert not any(secret in str(e.details) for e in events)


async def test_a_task_takes_a_callback_url_and_a_bad_one_stores_nothing(platform: Platform,
                                                                       client) -> None:
    headers = platform.bearer("acme", "submitter")
    # a public address, and an agent type without replicas: nothing is ever sent there
    callback = "http://93.184.216.34/done"
    accepted = await client.post(f"{API}/tasks", headers=headers, json={
        "description": "x", "agent_type": "calculator", "callback_url": callback})
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["callback_url"] == callback
    shown = await client.get(f"{API}/tasks/{accepted.json()['id']}", headers=headers)
    assert shown.json()["callback_url"] == callback

    for url in ("ftp://93.184.216.34/", "http://10.1.2.3/done", "http://127.0.0.1:9/"):
        refused = await client.post(f"{API}/tasks", headers=headers, json={
            "description": "y", "agent_type": "calculator", "callback_url": url})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["details"]["field"] == "callback_url"
    page = await client.get(f"{API}/tasks", headers=headers)
    assert [t["id"] for t in page.json()["tasks"]] == [accepted.json()["id"]]
