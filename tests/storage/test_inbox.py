"""Agent inboxes: post, list oldest first in pages, ack once, count, and refuse bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from storage.errors import InvalidRequest, NotFound, SchemaOutOfDate
from storage.inbox import MAX_BODY_BYTES, InboxStore


@pytest.fixture
async def inbox(database_url: str) -> AsyncIterator[InboxStore]:
    async with await InboxStore.open(database_url) as store:
        yield store


async def test_a_posted_message_is_listed_with_everything_it_was_posted_with(
    inbox: InboxStore,
) -> None:
    body = {"retrain": True, "rows": [1, 2.5, "three", None], "nested": {"ü": "ñ"}}
    posted = await inbox.post("learning", body, sender="communication", task_id="a" * 32,
                              subject="new data", tenant="acme")

    messages, next_cursor = await inbox.list("learning", tenant="acme")

    assert messages == [posted] and next_cursor is None
    stored = messages[0]
    assert stored.body == body and stored.sender == "communication"
    assert stored.task_id == "a" * 32 and stored.subject == "new data" and stored.tenant == "acme"
    assert stored.acked_at is None and stored.created_at.tzinfo is not None
    assert len(stored.id) == 32
    assert stored.to_json()["created_at"] == stored.created_at.isoformat()
    assert (await inbox.list("monitoring", tenant="acme"))[0] == []


async def test_a_tenant_lists_counts_and_acks_only_its_own_messages(inbox: InboxStore) -> None:
    mine = await inbox.post("learning", {"n": 1}, tenant="acme")
    theirs = await inbox.post("learning", {"canary": "zephyr"}, tenant="globex")

    assert [m.id for m in (await inbox.list("learning", tenant="acme"))[0]] == [mine.id]
    assert [m.id for m in (await inbox.list("learning", tenant="globex"))[0]] == [theirs.id]
    assert (await inbox.list("learning"))[0] == []  # the default tenant has none
    assert await inbox.unacked_count("learning", tenant="acme") == 1
    with pytest.raises(NotFound):
        await inbox.ack(theirs.id, tenant="acme")
    (still,), _ = await inbox.list("learning", tenant="globex")
    assert still.acked_at is None  # the refused ack changed nothing
    assert (await inbox.ack(theirs.id, tenant="globex")).acked_at is not None


async def test_messages_come_oldest_first_in_pages(inbox: InboxStore) -> None:
    posted = [await inbox.post("learning", {"n": n}) for n in range(5)]
    await inbox.post("monitoring", {"n": "other"})

    first, cursor = await inbox.list("learning", limit=2)
    second, cursor2 = await inbox.list("learning", limit=2, cursor=cursor)
    third, cursor3 = await inbox.list("learning", limit=2, cursor=cursor2)

    assert [m.body["n"] for m in first + second + third] == [0, 1, 2, 3, 4]
    assert [m.id for m in first + second + third] == [m.id for m in posted]
    assert cursor and cursor2 and cursor3 is None


async def test_ack_hides_a_message_and_the_first_ack_time_stands(inbox: InboxStore) -> None:
    kept = await inbox.post("learning", {"n": 1})
    read = await inbox.post("learning", {"n": 2})
    assert await inbox.unacked_count("learning") == 2

    acked = await inbox.ack(read.id)
    again = await inbox.ack(read.id)

    assert acked.acked_at is not None and again.acked_at == acked.acked_at
    assert acked.body == {"n": 2}
    assert [m.id for m in (await inbox.list("learning"))[0]] == [kept.id]
    everything, _ = await inbox.list("learning", include_acked=True)
    assert [m.id for m in everything] == [kept.id, read.id]
    assert everything[1].acked_at == acked.acked_at
    assert await inbox.unacked_count("learning") == 1
    assert await inbox.unacked_count("nobody") == 0


async def test_acking_an_unknown_message_is_not_found(inbox: InboxStore) -> None:
    with pytest.raises(NotFound) as raised:
        await inbox.ack("0" * 32)
    assert raised.value.details == {"message_id": "0" * 32}


async def test_any_json_value_but_null_is_a_body(inbox: InboxStore) -> None:
    for body in ("plain text", 42, [1, 2], False):
        assert (await inbox.post("learning", body)).body == body
    assert [m.body for m in (await inbox.list("learning"))[0]] == ["plain text", 42, [1, 2], False]


@pytest.mark.parametrize(("recipient", "body", "options", "expected"), [
    ("learning", None, {}, "must not be null"),
    ("learning", {"x": float("nan")}, {}, "not plain JSON"),
    ("learning", {"x": object()}, {}, "not plain JSON"),
    ("", {}, {}, "recipient must be a non-empty string"),
    ("x" * 65, {}, {}, "recipient is 65 characters"),
    ("learning", {}, {"subject": "s" * 201}, "subject is 201 characters"),
    ("learning", {}, {"sender": ""}, "sender must be a non-empty string"),
    ("learning", {}, {"tenant": None}, "tenant must be a non-empty string"),
])
async def test_bad_messages_are_refused(inbox: InboxStore, recipient, body, options,
                                        expected: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        await inbox.post(recipient, body, **options)
    assert expected in str(raised.value)
    assert await inbox.unacked_count("learning") == 0


async def test_a_body_over_the_bound_is_refused_and_one_at_it_is_kept(inbox: InboxStore) -> None:
    at_bound = "x" * (MAX_BODY_BYTES - 2)  # the two quotes make it exactly the bound
    await inbox.post("learning", at_bound)

    with pytest.raises(InvalidRequest) as raised:
        await inbox.post("learning", at_bound + "x")

    assert raised.value.details == {"size": MAX_BODY_BYTES + 1, "limit": MAX_BODY_BYTES}
    assert await inbox.unacked_count("learning") == 1


async def test_bad_limits_and_cursors_are_refused(inbox: InboxStore) -> None:
    with pytest.raises(InvalidRequest):
        await inbox.list("learning", limit=0)
    with pytest.raises(InvalidRequest):
        await inbox.list("learning", limit=1001)
    with pytest.raises(InvalidRequest, match="not one this inbox issued"):
        await inbox.list("learning", cursor="not-a-cursor")


async def test_the_store_refuses_a_database_that_was_never_migrated(
    empty_database_url: str,
) -> None:
    with pytest.raises(SchemaOutOfDate):
        await InboxStore.open(empty_database_url)
