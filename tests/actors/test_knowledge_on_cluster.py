"""The `knowledge` agent on the session's Ray cluster through the real platform (PostgreSQL,
the router on): a new user's path (add the handbook, ask in words, get an answer with citations
routed to `knowledge`), deletes seen at once, a killed replica rebuilding the same results from
storage, refused documents that store nothing, large documents staged in parts, and a second
tenant that sees none of it."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from actors.config import PoolConfig
from actors.knowledge_requests import INLINE_MAX_BYTES
from cluster.client import Client
from ml.config import RouterConfig
from storage.errors import InvalidRequest, NotFound
from storage.messages import TaskStatus
from tests.support.platform import run_platform, wait_until

pytestmark = pytest.mark.cluster

CORPUS = Path(__file__).resolve().parents[1] / "data" / "knowledge_corpus"
QUESTION = "How long do customers have to ask for a refund?"


@pytest.fixture(scope="module")
def platform(ray_cluster: None, tmp_path_factory: Any) -> Iterator[Client]:
    yield from run_platform("postgresql", tmp_path_factory.mktemp("knowledge"),
                            router=RouterConfig(),
                            pools={"knowledge": PoolConfig(replicas=1, concurrency=8)})


@pytest.fixture(scope="module")
def handbook(platform: Client) -> Client:
    for path in sorted(CORPUS.iterdir()):
        added = platform.knowledge_add(path, collection="handbook", tenant="acme",
                                       document_id=path.stem)
        assert added["chunks"] >= 1 and added["document_id"] == path.stem
    return platform


def test_a_question_in_words_is_routed_to_knowledge_and_answered_with_citations(
        handbook: Client) -> None:
    task_id = handbook.submit("what does the handbook say about refunds?", tenant="acme")
    task = handbook.wait(task_id, 120)
    assert task.status is TaskStatus.SUCCEEDED, task.error
    assert task.agent_type == "knowledge" and task.route["method"] == "semantic"
    result = task.result
    assert result["collection"] == "handbook" and result["found"], result
    assert result["citations"] and {c["document_id"] for c in result["citations"]} == {
        "refunds"}
    text = (CORPUS / "refunds.md").read_text()
    for citation in result["citations"]:
        assert f"[{citation['number']}]" in result["answer"]
        assert text[citation["start"]:citation["end"]] == citation["text"]


def test_a_deleted_document_leaves_search_at_once(handbook: Client) -> None:
    query = "what are the support hours on weekends"
    assert handbook.knowledge_search(query, collection="handbook", tenant="acme")[
        "hits"][0]["document_id"] == "support-hours"
    handbook.knowledge_delete("support-hours", collection="handbook", tenant="acme")
    hits = handbook.knowledge_search(query, collection="handbook", k=20, tenant="acme")["hits"]
    assert "support-hours" not in {hit["document_id"] for hit in hits}
    documents = handbook.knowledge_documents("handbook", tenant="acme")["documents"]
    assert "support-hours" not in {d["id"] for d in documents}
    handbook.knowledge_add(CORPUS / "support-hours.txt", collection="handbook", tenant="acme",
                           document_id="support-hours")


def test_a_killed_replica_is_replaced_and_answers_the_same(handbook: Client) -> None:
    before = handbook.knowledge_search(QUESTION, collection="handbook", k=5, tenant="acme")
    answer = handbook.knowledge_answer(QUESTION, collection="handbook", tenant="acme")
    pids = ray.get(handbook.orchestrator.replica_pids.remote())
    victim = next(name for name in pids if ":knowledge:" in name)
    os.kill(pids[victim], signal.SIGKILL)

    def replaced() -> bool:
        now = ray.get(handbook.orchestrator.replica_pids.remote())
        return any(":knowledge:" in name and name != victim for name in now)
    wait_until(replaced, 60, what="a new knowledge replica")
    after = handbook.knowledge_search(QUESTION, collection="handbook", k=5, tenant="acme")
    assert [h["chunk_id"] for h in after["hits"]] == [h["chunk_id"] for h in before["hits"]]
    assert [h["score"] for h in after["hits"]] == pytest.approx(
        [h["score"] for h in before["hits"]])
    again = handbook.knowledge_answer(QUESTION, collection="handbook", tenant="acme")
    assert again["answer"] == answer["answer"] and again["citations"] == answer["citations"]


def test_refused_documents_store_nothing(handbook: Client) -> None:
    documents = handbook.knowledge_documents("handbook", tenant="acme")["documents"]
    with pytest.raises(InvalidRequest, match="scan.pdf"):
        handbook.knowledge_add(b"%PDF-1.7\n not a real pdf", name="scan.pdf",
                               collection="handbook", tenant="acme")
    with pytest.raises(InvalidRequest, match="photo.png"):
        handbook.knowledge_add(b"\x89PNG....", name="photo.png", collection="handbook",
                               tenant="acme")
    assert handbook.knowledge_documents("handbook", tenant="acme")["documents"] == documents


def test_a_document_larger_than_a_payload_is_staged_in_parts(handbook: Client) -> None:
    text = "Forklift certification must be renewed every three years. " * 22_000
    assert len(text) > 2 * INLINE_MAX_BYTES
    added = handbook.knowledge_add(text.encode(), name="forklifts.txt", collection="ops",
                                   tenant="acme")
    assert added["size_bytes"] == len(text) and added["chunks"] > 100
    hits = handbook.knowledge_search("how often is forklift certification renewed",
                                     collection="ops", tenant="acme")["hits"]
    assert hits[0]["document_name"] == "forklifts.txt"


def test_another_tenant_never_sees_the_handbook(handbook: Client) -> None:
    assert handbook.knowledge_collections(tenant="globex") == []
    with pytest.raises(NotFound):
        handbook.knowledge_search("refund", collection="handbook", tenant="globex")
    with pytest.raises(NotFound):
        handbook.knowledge_documents("handbook", tenant="globex")
    with pytest.raises(NotFound):
        handbook.knowledge_delete("refunds", collection="handbook", tenant="globex")
    task = handbook.wait(handbook.submit("what does the handbook say about refunds?",
                                         tenant="globex"), 60)
    assert task.status is TaskStatus.FAILED and task.agent_type == "knowledge"
    assert "no knowledge collections" in task.error.message
    assert "refund" not in str(task.error.to_json()).lower().replace("refunds?", "")
    assert handbook.knowledge_search("refund", collection="handbook", tenant="acme")["hits"]
