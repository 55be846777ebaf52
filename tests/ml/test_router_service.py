"""The router service in this process, on a real database: decisions, learning from outcomes and
feedback, what survives a restart, and refusal of bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from actors.agent import Agent
from actors.registry import agent_specs, load_agent_types
from ml.config import RouterConfig
from ml.router_service import EMBED_SLICE, EMBED_SLICE_CHARS, RouterService, embed_slices
from storage.database import migrate
from storage.errors import InvalidRequest
from storage.messages import AgentSpec, AgentTask, RouteMethod, TaskStatus, new_task_id, utcnow
from storage.task_store import TaskStore, WriteBatch
from tests.support.databases import DATABASE_KINDS, database_url_fixture

AGENT_TYPES = agent_specs(load_agent_types(()))
CONFIG = RouterConfig(stats_interval_s=3600.0)


@pytest.fixture(params=DATABASE_KINDS, ids=DATABASE_KINDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    for url in database_url_fixture(request.param, tmp_path):
        migrate(url)
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    for url in database_url_fixture("sqlite", tmp_path):
        migrate(url)
        yield url


async def started(url: str, config: RouterConfig = CONFIG) -> RouterService:
    service = RouterService(AGENT_TYPES, config, url)
    await service.ready()
    return service


@pytest.fixture
async def service(sqlite_url: str) -> AsyncIterator[RouterService]:
    router = await started(sqlite_url)
    try:
        yield router
    finally:
        await router.close()


async def test_clear_requests_are_routed_with_the_examples_that_explain_them(
    service: RouterService,
) -> None:
    decisions = await service.decide_many([
        "what is 17% of 2,340?",
        "is this review positive or negative: the battery died after two days",
    ])

    assert [d.agent_type for d in decisions] == ["calculator", "text_analysis"]
    for decision in decisions:
        assert decision.routed and decision.method is RouteMethod.SEMANTIC
        assert decision.candidates[0][0] == decision.agent_type
        assert decision.nearest and all(n.agent_type == decision.agent_type
                                        for n in decision.nearest)
        assert decision.to_json()["nearest"][0]["text"] == decision.nearest[0].text


async def test_an_out_of_scope_request_is_not_routed_and_says_why(
    service: RouterService,
) -> None:
    (decision,) = await service.decide_many(["book me a flight to Lisbon next Tuesday"])

    assert not decision.routed
    assert decision.reason.startswith("no confident route")


async def test_feedback_changes_the_later_decision_and_survives_a_restart(
    database_url: str,
) -> None:
    text = "tidy up the quarterly numbers for the board"
    first = await started(database_url)
    try:
        (before,) = await first.decide_many([text])
        target = "validation" if before.agent_type != "validation" else "data_processor"

        outcome = await first.feedback(text, target, task_id=new_task_id())
        (after,) = await first.decide_many([text])
    finally:
        await first.close()

    assert outcome == {"agent_type": target, "added": True, "replaced": 0}
    assert after.routed and after.agent_type == target
    assert after.nearest[0].source == "feedback" and after.nearest[0].text == text

    second = await started(database_url)
    try:
        (restarted,) = await second.decide_many([text])
        described = await second.describe()
    finally:
        await second.close()
    assert restarted.agent_type == target and restarted.nearest[0].source == "feedback"
    assert described["examples"][target]["feedback"] == 1


async def test_confident_successes_are_learned_once_and_kept(sqlite_url: str) -> None:
    service = await started(sqlite_url)
    try:
        text = "work out the compound interest on 5,000 at 4% for 7 years"
        added = await service.learn([
            ("a" * 32, text, "calculator", 0.95, "default"),
            ("b" * 32, text + " ", "calculator", 0.95, "default"),  # the same text twice
            ("c" * 32, "compute the mean of 3, 9 and 12", "calculator", 0.2, "default"),
            ("d" * 32, "whatever this is", "no_such_type", 0.99, "default"),
        ])
        again = await service.learn([("e" * 32, text.upper(), "calculator", 0.99, "default")])
        stored = await service.stored_examples()
    finally:
        await service.close()

    assert added == 1 and again == 0
    assert [(e["text"], e["agent_type"], e["source"]) for e in stored] == [
        (text, "calculator", "learned")]

    restarted = await started(sqlite_url)
    try:
        assert [e["text"] for e in await restarted.stored_examples("calculator")] == [text]
    finally:
        await restarted.close()


async def test_learning_can_be_switched_off(sqlite_url: str) -> None:
    service = await started(sqlite_url, RouterConfig(learn=False, stats_interval_s=3600.0))
    try:
        assert await service.learn(
            [("a" * 32, "sum 4 and 5", "calculator", 1.0, "default")]) == 0
        assert await service.stored_examples() == []
    finally:
        await service.close()


async def test_feedback_replaces_what_was_learned_for_another_type(
    service: RouterService,
) -> None:
    text = "check the totals of every invoice line against the header"
    assert await service.learn([("a" * 32, text, "calculator", 0.99, "default")]) == 1

    outcome = await service.feedback(text, "validation")
    repeated = await service.feedback(text, "validation")

    assert outcome == {"agent_type": "validation", "added": True, "replaced": 1}
    assert repeated == {"agent_type": "validation", "added": False, "replaced": 0}
    assert [(e["agent_type"], e["source"]) for e in await service.stored_examples()] == [
        ("validation", "feedback")]


async def test_learned_examples_are_bounded_per_type_oldest_first(sqlite_url: str) -> None:
    service = await started(sqlite_url, RouterConfig(max_learned_per_type=2,
                                                     stats_interval_s=3600.0))
    try:
        texts = ["add up 12 and 30", "what is the square root of 1764",
                 "convert 98.6 fahrenheit to celsius"]
        for index, text in enumerate(texts):
            assert await service.learn([(f"{index:032d}", text, "calculator", 0.99,
                                         "default")]) == 1
        kept = [e["text"] for e in await service.stored_examples("calculator")]
    finally:
        await service.close()

    assert kept == texts[1:]


CLOSE_CALLS = ["average of these numbers by region", "sum the amounts in this table",
               "compute the average order value from these rows",
               "total of 3 invoices: 120, 80 and 45"]


async def test_repeated_failures_of_a_type_lower_its_standing(
    service: RouterService, sqlite_url: str,
) -> None:
    clear = "what is 17% of 2,340?"
    before = await service.decide_many([clear, *CLOSE_CALLS])
    contested = [i for i, d in enumerate(before)
                 if 0.05 < dict(d.candidates).get("calculator", 0.0) < 0.95]
    assert contested, "no description here splits the vote between calculator and another type"
    store = await TaskStore.open(sqlite_url)
    try:
        now = utcnow()
        batch = WriteBatch()
        for _ in range(30):
            batch.new_tasks.append({
                "id": new_task_id(), "tenant": "default", "description": clear, "payload": {},
                "agent_type": "calculator", "status": TaskStatus.FAILED.value, "priority": 0,
                "attempts": 1, "max_attempts": 1, "timeout_s": 10.0, "idempotency_key": None,
                "batch_id": None, "route": None, "result": None, "error": None,
                "created_at": now - timedelta(seconds=5), "updated_at": now, "finished_at": now})
        await store.apply(batch)
    finally:
        await store.close()

    stats = await service.refresh_stats()
    after = await service.decide_many([clear, *CLOSE_CALLS])

    assert stats["calculator"].success_rate == 0.0 and stats["calculator"].samples == 30
    for i in contested:
        assert dict(after[i].candidates)["calculator"] < dict(before[i].candidates)["calculator"]
    assert after[0].agent_type == "calculator"  # strong evidence is not overturned


@pytest.mark.parametrize("description, message", [
    ("", "non-empty"), ("   \n ", "non-empty"), ("x" * 10_001, "10001 characters"),
])
async def test_bad_descriptions_get_a_clear_error(service: RouterService, description: str,
                                                  message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        await service.decide_many(["add 2 and 2", description])
    with pytest.raises(InvalidRequest, match=message):
        await service.feedback(description, "calculator")


async def test_feedback_for_an_unknown_type_is_refused_and_changes_nothing(
    service: RouterService,
) -> None:
    with pytest.raises(InvalidRequest, match="unknown agent_type 'translator'"):
        await service.feedback("translate this to French", "translator")
    assert await service.stored_examples() == []


class Translator(Agent):
    spec = AgentSpec(
        name="translator", description="translates text between languages",
        capabilities=("translate text into another language", "localise product copy"),
        examples=("translate this paragraph into French", "what is 'good morning' in Japanese",
                  "render these subtitles in Spanish", "put this email into German"))

    async def run(self, task: AgentTask) -> dict:
        return {}


async def test_an_agent_type_added_while_serving_is_routed_to_and_can_be_removed(
    service: RouterService,
) -> None:
    text = "please translate the welcome message into Italian"
    (unknown,) = await service.decide_many([text])
    count = await service.add_type(Translator.spec)
    (routed,) = await service.decide_many([text])
    removed = await service.remove_type("translator")
    (after,) = await service.decide_many([text])

    assert unknown.agent_type != "translator"
    assert count == 6 and removed == 6
    assert routed.routed and routed.agent_type == "translator"
    assert after.agent_type != "translator"


async def test_texts_are_embedded_for_other_processes_as_its_embedder_encodes_them(
    service: RouterService,
) -> None:
    texts = [f"customer review number {n}: the parcel arrived {n} days late" for n in range(40)]
    vectors, (decision,) = await asyncio.gather(
        service.embed(texts), service.decide_many(["what is 17% of 2,340?"]))

    assert service.router is not None
    expected = service.router.embedder.encode(texts)
    assert vectors.dtype == np.float32 and vectors.shape == (40, expected.shape[1])
    assert np.array_equal(vectors, expected)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert decision.agent_type == "calculator"
    assert (await service.embed([])).shape == (0, expected.shape[1])


@pytest.mark.parametrize("texts", ["one string", [1, 2], ["fine", None]])
async def test_embedding_anything_but_a_list_of_texts_is_refused(service: RouterService,
                                                                 texts: object) -> None:
    with pytest.raises(InvalidRequest, match="embed takes a list of texts"):
        await service.embed(texts)  # type: ignore[arg-type]


def test_bulk_texts_are_sliced_small_enough_for_a_decision_to_wait_little() -> None:
    texts = ["long " * 400] * 6 + [f"short {n}" for n in range(40)]
    slices = list(embed_slices(texts))

    assert [text for piece in slices for text in piece] == texts
    assert all(len(piece) <= EMBED_SLICE for piece in slices)
    assert all(sum(min(len(t), 1_200) for t in piece) <= EMBED_SLICE_CHARS
               for piece in slices)
    assert list(embed_slices([])) == []
