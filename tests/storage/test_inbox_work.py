"""Inbox reads and writes for messages that start work: which messages wait to start, a start
recorded once, a reply settled and posted once, and each mark held to its tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from storage.errors import InvalidRequest, NotFound
from storage.inbox import MAX_BODY_BYTES, InboxStore

TASK = "t" * 32
OTHER_TASK = "u" * 32


@pytest.fixture
async def inbox(database_url: str) -> AsyncIterator[InboxStore]:
    async with await InboxStore.open(database_url) as store:
        yield store


async def test_a_reply_keeps_the_message_it_answers(inbox: InboxStore) -> None:
    original = await inbox.post("listener", {"n": 1}, tenant="acme")
    reply = await inbox.post("sleeper", {"ok": True}, tenant="acme", in_reply_to=original.id)

    (stored,), _ = await inbox.list("sleeper", tenant="acme")

    assert stored == reply and stored.in_reply_to == original.id
    assert stored.started_task_id is None and stored.replied_at is None
    assert stored.to_json()["in_reply_to"] == original.id
    with pytest.raises(InvalidRequest, match="in_reply_to is 33 characters"):
        await inbox.post("sleeper", {}, in_reply_to="x" * 33)


async def test_messages_to_start_are_unread_unstarted_non_replies_of_every_tenant(
    inbox: InboxStore,
) -> None:
    first = await inbox.post("listener", {"n": 1}, tenant="acme")
    second = await inbox.post("listener", {"n": 2}, tenant="globex")
    await inbox.post("sleeper", {"n": "not listening"}, tenant="acme")
    await inbox.post("listener", {"n": "a reply"}, tenant="acme", in_reply_to=first.id)
    read = await inbox.post("listener", {"n": "read by a person"}, tenant="acme")
    await inbox.ack(read.id, tenant="acme")
    third = await inbox.post("other", {"n": 3}, tenant="acme")

    waiting = await inbox.to_start({"listener", "other"})

    assert [m.id for m in waiting] == [first.id, second.id, third.id]
    assert [m.tenant for m in waiting] == ["acme", "globex", "acme"]
    assert await inbox.to_start([]) == []


async def test_messages_to_start_come_in_pages_after_a_position(inbox: InboxStore) -> None:
    posted = [await inbox.post("listener", {"n": n}) for n in range(5)]

    first = await inbox.to_start({"listener"}, limit=2)
    second = await inbox.to_start({"listener"}, limit=2,
                                  after=(first[-1].created_at, first[-1].id))
    rest = await inbox.to_start({"listener"}, limit=2,
                                after=(second[-1].created_at, second[-1].id))

    assert [m.id for m in first + second + rest] == [m.id for m in posted]
    with pytest.raises(InvalidRequest, match="limit must be between 1 and 1000"):
        await inbox.to_start({"listener"}, limit=0)


async def test_a_start_is_recorded_once_and_acknowledges_the_message(inbox: InboxStore) -> None:
    message = await inbox.post("listener", {"n": 1}, tenant="acme")

    assert await inbox.mark_started(message.id, "acme", TASK) is True
    assert await inbox.mark_started(message.id, "acme", OTHER_TASK) is False

    (stored,), _ = await inbox.list("listener", tenant="acme", include_acked=True)
    assert stored.started_task_id == TASK and stored.acked_at is not None
    assert await inbox.to_start({"listener"}) == []
    assert [m.id for m in await inbox.started_unreplied()] == [message.id]
    assert await inbox.unacked_count("listener", tenant="acme") == 0


async def test_a_start_keeps_an_earlier_acknowledgement(inbox: InboxStore) -> None:
    message = await inbox.post("listener", {"n": 1})
    acked = await inbox.ack(message.id)

    await inbox.mark_started(message.id, "default", TASK)

    (stored,), _ = await inbox.list("listener", include_acked=True)
    assert stored.acked_at == acked.acked_at and stored.started_task_id == TASK


async def test_another_tenants_message_cannot_be_marked(inbox: InboxStore) -> None:
    theirs = await inbox.post("listener", {"n": 1}, tenant="globex")

    with pytest.raises(NotFound):
        await inbox.mark_started(theirs.id, "acme", TASK)
    with pytest.raises(NotFound):
        await inbox.mark_replied(theirs.id, "acme", reply_to="sleeper", body={"leak": 1})

    (untouched,) = await inbox.to_start({"listener"})
    assert untouched.id == theirs.id and untouched.started_task_id is None
    assert untouched.acked_at is None and untouched.replied_at is None
    assert (await inbox.list("sleeper", tenant="acme"))[0] == []
    assert (await inbox.list("sleeper", tenant="globex"))[0] == []


async def test_a_reply_is_posted_once_to_the_same_tenant_and_links_back(
    inbox: InboxStore,
) -> None:
    message = await inbox.post("listener", {"n": 1}, tenant="acme", sender="sleeper",
                               subject="work")
    await inbox.mark_started(message.id, "acme", TASK)

    reply = await inbox.mark_replied(message.id, "acme", reply_to="sleeper",
                                     body={"status": "succeeded", "result": 2},
                                     sender="listener", task_id=TASK, subject="Re: work")
    again = await inbox.mark_replied(message.id, "acme", reply_to="sleeper",
                                     body={"status": "succeeded", "result": 2})

    assert reply is not None and again is None
    replies, _ = await inbox.list("sleeper", tenant="acme")
    assert replies == [reply]
    assert reply.in_reply_to == message.id and reply.task_id == TASK
    assert reply.sender == "listener" and reply.subject == "Re: work" and reply.tenant == "acme"
    assert reply.body == {"status": "succeeded", "result": 2}
    assert (await inbox.list("sleeper", tenant="globex"))[0] == []
    assert await inbox.started_unreplied() == []
    (settled,), _ = await inbox.list("listener", tenant="acme", include_acked=True)
    assert settled.replied_at is not None and settled.started_task_id == TASK
    assert await inbox.to_start({"sleeper"}) == []  # a reply never starts work


async def test_a_reply_with_no_address_settles_and_acknowledges_the_message(
    inbox: InboxStore,
) -> None:
    message = await inbox.post("listener", {"n": 1})

    assert await inbox.mark_replied(message.id, "default") is None

    (settled,), _ = await inbox.list("listener", include_acked=True)
    assert settled.replied_at is not None and settled.acked_at is not None
    assert settled.started_task_id is None
    assert await inbox.to_start({"listener"}) == []


@pytest.mark.parametrize(("body", "expected"), [
    (None, "must not be null"),
    ("x" * MAX_BODY_BYTES, f"an inbox accepts at most {MAX_BODY_BYTES}"),
])
async def test_a_bad_reply_changes_nothing(inbox: InboxStore, body, expected: str) -> None:
    message = await inbox.post("listener", {"n": 1})
    await inbox.mark_started(message.id, "default", TASK)

    with pytest.raises(InvalidRequest, match=expected):
        await inbox.mark_replied(message.id, "default", reply_to="sleeper", body=body)

    assert [m.id for m in await inbox.started_unreplied()] == [message.id]
    assert (await inbox.list("sleeper"))[0] == []


async def test_started_unreplied_is_oldest_first_in_pages_across_tenants(
    inbox: InboxStore,
) -> None:
    started = []
    for n, tenant in enumerate(["acme", "globex", "acme"]):
        message = await inbox.post("listener", {"n": n}, tenant=tenant)
        await inbox.mark_started(message.id, tenant, f"{n}" * 32)
        started.append(message)
    await inbox.post("listener", {"n": "not started"})

    first = await inbox.started_unreplied(limit=2)
    rest = await inbox.started_unreplied(limit=2, after=(first[-1].created_at, first[-1].id))

    assert [m.id for m in first + rest] == [m.id for m in started]
    assert [m.started_task_id for m in first] == ["0" * 32, "1" * 32]
