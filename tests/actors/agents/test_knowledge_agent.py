"""The `knowledge` agent in process on a real SQLite store and the real embedding model: ingest,
search and answer with citations on the handbook corpus, bad documents that store nothing,
staged uploads, tenants kept apart, two replicas kept consistent, and grounded answers whose
citations are checked."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from actors.agents.knowledge import MAX_PART_BYTES, Knowledge
from actors.errors import InvalidTaskInput
from ml.knowledge.answer import NOT_FOUND
from storage.database import migrate_async
from storage.knowledge_store import KnowledgeStore
from storage.knowledge_uploads import split_parts
from storage.messages import AgentContext, AgentTask

CORPUS = Path(__file__).resolve().parents[2] / "data" / "knowledge_corpus"
Run = Callable[..., Any]


def task(payload: dict[str, Any], description: str = "knowledge work",
         tenant: str = "acme") -> AgentTask:
    return AgentTask(uuid.uuid4().hex, 1, "knowledge", description, payload, 60.0, tenant)


class FakeModels:
    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.requests: list[dict[str, Any]] = []

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        return {"text": self.answers.pop(0), "model": "fake", "usage": None, "cost_usd": 0.0}

    def stream(self, request: dict[str, Any]) -> Any:
        raise NotImplementedError


@pytest.fixture
async def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'knowledge.db'}"
    await migrate_async(url)
    return url


async def replica(url: str, name: str = "knowledge-0", **settings: Any) -> Knowledge:
    agent = Knowledge()
    agent.context = AgentContext(name, "test", url, settings)
    await agent.setup()
    return agent


@pytest.fixture
async def agent(database: str) -> AsyncIterator[Knowledge]:
    knowledge = await replica(database)
    yield knowledge
    await knowledge.close()


async def add_corpus(agent: Knowledge, collection: str = "handbook",
                     tenant: str = "acme") -> None:
    for path in sorted(CORPUS.iterdir()):
        done = await agent.run(task({"operation": "ingest", "collection": collection,
                                     "name": path.name, "document_id": path.stem,
                                     "content_base64": base64.b64encode(
                                         path.read_bytes()).decode()}, tenant=tenant))
        assert done["chunks"] >= 1 and done["document_id"] == path.stem


async def test_a_routed_question_is_answered_from_the_collection_it_names_with_citations(
        agent: Knowledge):
    await add_corpus(agent)
    answer = await agent.run(task({}, "what does the handbook say about refunds?"))
    assert answer["collection"] == "handbook" and answer["found"], answer
    assert answer["mode"] == "extractive" and answer["citations"]
    assert {c["document_id"] for c in answer["citations"]} == {"refunds"}
    for citation in answer["citations"]:
        assert f"[{citation['number']}]" in answer["answer"]
    text = (CORPUS / "refunds.md").read_text()
    first = answer["citations"][0]
    assert text[first["start"]:first["end"]] == first["text"]


async def test_search_finds_the_right_document_and_delete_removes_it_at_once(agent: Knowledge):
    await add_corpus(agent)
    found = await agent.run(task({"operation": "search", "collection": "handbook",
                                  "query": "how many vacation days per year", "k": 3}))
    assert found["hits"][0]["document_id"] == "leave-policy"
    listed = await agent.run(task({"operation": "list", "collection": "handbook"}))
    chunks = {d["id"]: d["chunks"] for d in listed["documents"]}["leave-policy"]
    assert await agent.run(task({"operation": "delete", "collection": "handbook",
                                 "document_id": "leave-policy"})) == {
        "collection": "handbook", "document_id": "leave-policy", "deleted": True,
        "chunks": chunks}
    again = await agent.run(task({"operation": "search", "collection": "handbook",
                                  "query": "how many vacation days per year", "k": 10}))
    assert "leave-policy" not in {hit["document_id"] for hit in again["hits"]}
    listed = await agent.run(task({"operation": "list", "collection": "handbook"}))
    assert "leave-policy" not in {d["id"] for d in listed["documents"]}


async def test_a_corrupt_pdf_or_an_oversized_document_stores_nothing(database: str):
    agent = await replica(database, knowledge_max_upload_bytes=1000)
    try:
        with pytest.raises(InvalidTaskInput, match="broken.pdf"):
            await agent.run(task({"operation": "ingest", "collection": "handbook",
                                  "name": "broken.pdf", "content_base64": base64.b64encode(
                                      b"%PDF-1.7 not really a pdf").decode()}))
        with pytest.raises(InvalidTaskInput, match="big.txt"):
            await agent.run(task({"operation": "ingest", "collection": "handbook",
                                  "name": "big.txt", "text": "word " * 1000}))
        assert (await agent.run(task({"operation": "list"})))["collections"] == []
    finally:
        await agent.close()


async def test_a_large_document_staged_in_parts_is_ingested_and_its_parts_deleted(
        agent: Knowledge):
    body = ("Refunds of rare widgets take exactly nineteen days to process. " * 20_000).encode()
    parts = split_parts(body, MAX_PART_BYTES)
    assert len(parts) > 1
    for number, part in enumerate(parts):
        await agent.run(task({"operation": "stage", "upload_id": "up1", "part": number,
                              "data": base64.b64encode(part).decode()}))
    with pytest.raises(InvalidTaskInput, match="incomplete"):  # another tenant cannot use it
        await agent.run(task({"operation": "ingest", "collection": "big", "name": "big.txt",
                              "upload_id": "up1", "parts": len(parts)}, tenant="globex"))
    done = await agent.run(task({"operation": "ingest", "collection": "big", "name": "big.txt",
                                 "upload_id": "up1", "parts": len(parts)}))
    assert done["size_bytes"] == len(body) and done["chunks"] > 100
    assert agent.uploads is not None
    assert await agent.uploads.discard("acme", "up1") == 0


async def test_tenant_b_never_sees_tenant_a_documents(agent: Knowledge):
    await add_corpus(agent, tenant="acme")
    with pytest.raises(InvalidTaskInput, match="no knowledge collections"):
        await agent.run(task({}, "what does the handbook say about refunds?", tenant="globex"))
    with pytest.raises(InvalidTaskInput, match="no collection 'handbook'"):
        await agent.run(task({"operation": "search", "collection": "handbook",
                              "query": "refunds"}, tenant="globex"))
    assert (await agent.run(task({"operation": "list"}, tenant="globex"))) == {
        "collections": [], "cursor": None}
    with pytest.raises(InvalidTaskInput) as listing:
        await agent.run(task({"operation": "list", "collection": "handbook"}, tenant="globex"))
    assert listing.value.details["reason"] == "not_found"


async def test_a_write_on_one_replica_is_seen_by_another_at_its_next_search(database: str):
    one, two = await replica(database, "knowledge-0"), await replica(database, "knowledge-1")
    try:
        await add_corpus(one)
        query = {"operation": "search", "collection": "handbook", "query": "refund window"}
        assert (await two.run(task(query)))["hits"][0]["document_id"] == "refunds"
        await one.run(task({"operation": "delete", "collection": "handbook",
                            "document_id": "refunds"}))
        assert "refunds" not in {h["document_id"] for h in (await two.run(task(query)))["hits"]}
        await one.run(task({"operation": "ingest", "collection": "handbook",
                            "name": "refunds-2.md", "document_id": "refunds2",
                            "text": "# Refund window\n\nThe refund window is 45 days."}))
        assert (await two.run(task(query)))["hits"][0]["document_id"] == "refunds2"
    finally:
        await one.close()
        await two.close()


async def test_a_grounded_answer_keeps_only_citations_of_given_chunks(database: str):
    agent = await replica(database, llm_configured=True)
    try:
        await add_corpus(agent)
        agent.llm = FakeModels("Customers have 30 days to ask for a refund [2] [7].",
                               "Refunds are generous.")
        answer = await agent.run(task({"question": "How long do customers have to ask for a "
                                                   "refund?", "collection": "handbook"}))
        assert answer["mode"] == "grounded" and answer["found"]
        assert answer["answer"] == "Customers have 30 days to ask for a refund [1]."
        assert len(answer["citations"]) == 1 and answer["citations"][0]["number"] == 1
        assert "[1] (from" in agent.llm.requests[0]["messages"][1]["content"]
        refused = await agent.run(task({"question": "How long do customers have to ask for a "
                                                    "refund?", "collection": "handbook"}))
        assert refused["mode"] == "extractive" and "refused" in refused["note"]
        assert refused["citations"] and refused["found"]
        unknown = await agent.run(task({"question": "What is the boiling point of mercury on "
                                                    "Jupiter's moons?", "collection": "handbook"}))
        assert unknown["answer"] == NOT_FOUND and unknown["calls"] == 0
    finally:
        await agent.close()


@pytest.mark.parametrize("payload, field", [
    ({"operation": "fly"}, "operation"),
    ({"operation": "search", "collection": "bad name!"}, "collection"),
    ({"operation": "search", "collection": "x", "k": 0}, "k"),
    ({"operation": "search", "collection": "x", "tenant": "globex"}, "tenant"),
    ({"operation": "ingest", "collection": "x", "name": "a.txt"}, "text"),
    ({"operation": "answer", "collection": "x", "mode": "poetic"}, "mode"),
])
async def test_bad_payloads_are_refused_naming_the_field(agent: Knowledge,
                                                         payload: dict[str, Any], field: str):
    with pytest.raises(InvalidTaskInput) as raised:
        await agent.run(task(payload))
    assert field in str(raised.value.details) or field in raised.value.message


async def test_stores_stay_consistent_with_storage(agent: Knowledge, database: str):
    await add_corpus(agent)
    async with await KnowledgeStore.open(database) as store:
        assert await store.chunk_count("acme", "handbook") == sum(
            d.chunk_count for d in await store.all_documents("acme", "handbook"))


async def test_collections_past_the_memory_bound_are_evicted_and_reloaded_on_use(
        database: str):
    agent = await replica(database, knowledge_memory_bytes=1)  # room for one at a time
    try:
        await add_corpus(agent, collection="one")
        await add_corpus(agent, collection="two")
        query = {"operation": "search", "query": "refund window", "k": 1}
        for name in ("one", "two", "one"):
            found = await agent.run(task({**query, "collection": name}))
            assert found["hits"][0]["document_id"] == "refunds"
        assert agent.library is not None
        held = agent.library.status()
        assert [c["collection"] for c in held["collections"]] == ["one"]
        assert held["evictions"] >= 2
    finally:
        await agent.close()
