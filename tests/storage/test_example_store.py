"""Stored routing examples: added all or none, read back in order, deleted, pruned oldest first,
each of them only ever within its own tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from storage.errors import InvalidRequest
from storage.example_store import ExampleStore, NewExample


@pytest.fixture
async def examples(database_url: str) -> AsyncIterator[ExampleStore]:
    async with await ExampleStore.open(database_url) as store:
        yield store


async def test_added_examples_are_read_back_in_order_with_everything_given(
    examples: ExampleStore,
) -> None:
    added = await examples.add([
        NewExample("calculator", "sum these numbers", "learned", "a" * 32),
        NewExample("text_analysis", "what's the tone of this review? ü", "feedback"),
    ])

    stored = await examples.all("default")

    assert stored == added
    assert [e.agent_type for e in stored] == ["calculator", "text_analysis"]
    assert stored[0].id < stored[1].id and stored[0].task_id == "a" * 32
    assert stored[1].text.endswith("ü") and stored[1].source == "feedback"
    assert stored[0].created_at.tzinfo is not None


@pytest.mark.parametrize("bad, message", [
    (NewExample("calculator", "  "), "needs some text"),
    (NewExample("calculator", "x" * 10_001), "at most 10000"),
    (NewExample("", "sum"), "agent_type"),
    (NewExample("calculator", "sum", "declared"), "source"),
    (NewExample("calculator", "sum", tenant=""), "tenant"),
    (NewExample("calculator", "sum", tenant="t" * 65), "tenant"),
])
async def test_a_bad_example_is_refused_and_nothing_of_its_batch_is_stored(
    examples: ExampleStore, bad: NewExample, message: str,
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        await examples.add([NewExample("calculator", "fine"), bad])

    assert await examples.all("default") == []


async def test_delete_and_prune_remove_only_what_they_name(examples: ExampleStore) -> None:
    added = await examples.add(
        [NewExample("calculator", f"sum {i}") for i in range(5)]
        + [NewExample("calculator", "feedback kept", "feedback"),
           NewExample("validation", "check it")])

    removed = await examples.prune("default", "calculator", "learned", keep=2)

    assert removed == [e.id for e in added[:3]][::-1]
    assert [e.text for e in await examples.all("default")] == ["sum 3", "sum 4",
                                                               "feedback kept", "check it"]
    assert await examples.delete("default", [added[3].id, 999_999]) == 1
    assert [e.text for e in await examples.all("default")] == ["sum 4", "feedback kept",
                                                               "check it"]


async def test_each_tenant_reads_deletes_and_prunes_only_its_own_examples(
    examples: ExampleStore,
) -> None:
    acme = await examples.add([NewExample("calculator", f"acme sum {i}", tenant="acme")
                               for i in range(3)])
    globex = await examples.add([NewExample("calculator", f"globex sum {i}", tenant="globex")
                                 for i in range(3)])

    assert await examples.delete("globex", [acme[0].id]) == 0
    assert await examples.prune("globex", "calculator", "learned", keep=1) == [
        globex[1].id, globex[0].id]
    by_tenant = await examples.by_tenant(["acme", "globex", "initech"])

    assert by_tenant == {"acme": acme, "globex": globex[2:], "initech": []}
    assert all(e.tenant == "acme" for e in await examples.all("acme"))
    with pytest.raises(InvalidRequest, match="tenant"):
        await examples.all("")
