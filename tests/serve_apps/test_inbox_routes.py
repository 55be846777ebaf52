"""`/api/v1/inbox/{agent_type}...` through the app on the in-process platform: a caller leaves a
message (signed with who it is), lists and acknowledges it; bad messages are refused with the
field named and nothing stored; viewers read but do not write; and another tenant's messages
answer exactly like missing ones and stay unread."""

from __future__ import annotations

from typing import Any

import pytest

from tests.serve_apps.test_app_harness import Platform, client, error_code, platform

__all__ = ["client", "platform"]

API = "/api/v1"


async def send(client, platform: Platform, body: Any, tenant: str = "acme",
               role: str = "submitter", agent_type: str = "learning",
               subject: str | None = None) -> dict[str, Any]:
    response = await client.post(f"{API}/inbox/{agent_type}",
                                 headers=platform.bearer(tenant, role),
                                 json={"body": body, "subject": subject})
    assert response.status_code == 201, response.text
    return response.json()


async def inbox(client, platform: Platform, tenant: str = "acme", agent_type: str = "learning",
                **query: Any) -> list[dict[str, Any]]:
    response = await client.get(f"{API}/inbox/{agent_type}",
                                headers=platform.bearer(tenant, "viewer"), params=query)
    assert response.status_code == 200, response.text
    return response.json()["messages"]


async def test_a_message_is_sent_listed_and_acknowledged(platform: Platform, client) -> None:
    first = await send(client, platform, {"payload": {"rows": [1, 2]}}, subject="new data")
    second = await send(client, platform, ["a", "list", "is", "a", "body", "too"])
    sender = f"user:{platform.users[('acme', 'submitter')].id}"
    assert (first["recipient"], first["tenant"], first["sender"], first["subject"]) == \
        ("learning", "acme", sender, "new data")
    assert first["body"] == {"payload": {"rows": [1, 2]}} and first["acked_at"] is None
    assert [m["id"] for m in await inbox(client, platform)] == [first["id"], second["id"]]

    acked = await client.post(f"{API}/inbox/learning/{first['id']}/ack",
                              headers=platform.bearer("acme", "submitter"))
    assert acked.status_code == 200, acked.text
    assert acked.json()["id"] == first["id"] and acked.json()["acked_at"]
    again = await client.post(f"{API}/inbox/learning/{first['id']}/ack",
                              headers=platform.bearer("acme", "submitter"))
    assert again.json()["acked_at"] == acked.json()["acked_at"]  # the first time stands
    assert [m["id"] for m in await inbox(client, platform)] == [second["id"]]
    everything = await inbox(client, platform, include_acked="true")
    assert [m["id"] for m in everything] == [first["id"], second["id"]]
    page = await client.get(f"{API}/inbox/learning", headers=platform.bearer("acme", "viewer"),
                            params={"limit": 1, "include_acked": "true"})
    assert [m["id"] for m in page.json()["messages"]] == [first["id"]]
    rest = await inbox(client, platform, include_acked="true",
                       cursor=page.json()["next_cursor"])
    assert [m["id"] for m in rest] == [second["id"]]


@pytest.mark.parametrize("body, field, words", [
    ({"body": None}, "body.body", "cannot be null"),
    ({"subject": "no body"}, "body.body", "Field required"),
    ({"body": {"n": 1}, "subject": ""}, "body.subject", "at least 1 character"),
    ({"body": {"n": 1}, "to": "learning"}, "body.to", "Extra inputs"),
])
async def test_bad_messages_are_refused_naming_the_field_and_nothing_is_stored(
        platform: Platform, client, body: dict[str, Any], field: str, words: str) -> None:
    response = await client.post(f"{API}/inbox/learning",
                                 headers=platform.bearer("acme", "submitter"), json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"]["field"] == field
    assert words in response.json()["error"]["message"]
    assert await inbox(client, platform, include_acked="true") == []


async def test_a_message_to_an_agent_type_that_does_not_exist_is_refused(platform: Platform,
                                                                         client) -> None:
    response = await client.post(f"{API}/inbox/no_such_type",
                                 headers=platform.bearer("acme", "submitter"),
                                 json={"body": {"n": 1}})
    assert response.status_code == 404 and error_code(response) == "not_found"
    assert "no agent type 'no_such_type'" in response.json()["error"]["message"]
    assert await inbox(client, platform, agent_type="no_such_type", include_acked="true") == []


async def test_viewers_read_but_do_not_send_or_acknowledge(platform: Platform, client) -> None:
    message = await send(client, platform, {"n": 1})
    viewer = platform.bearer("acme", "viewer")
    sent = await client.post(f"{API}/inbox/learning", headers=viewer, json={"body": {"n": 2}})
    acked = await client.post(f"{API}/inbox/learning/{message['id']}/ack", headers=viewer)
    assert (sent.status_code, acked.status_code) == (403, 403)
    assert [(m["id"], m["acked_at"]) for m in await inbox(client, platform)] == \
        [(message["id"], None)]


async def test_another_tenants_messages_are_missing_and_stay_unread(platform: Platform,
                                                                    client) -> None:
    message = await send(client, platform, {"secret plan": "acme only"})
    assert await inbox(client, platform, tenant="globex", include_acked="true") == []
    other = await client.post(f"{API}/inbox/learning/{message['id']}/ack",
                              headers=platform.bearer("globex", "admin"))
    assert other.status_code == 404 and "acme only" not in other.text
    wrong_inbox = await client.post(f"{API}/inbox/validation/{message['id']}/ack",
                                    headers=platform.bearer("acme", "submitter"))
    assert wrong_inbox.status_code == 404
    assert [(m["id"], m["acked_at"]) for m in await inbox(client, platform)] == \
        [(message["id"], None)]
