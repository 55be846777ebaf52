"""The knowledge routes through the app on the in-process platform (a real `knowledge` replica,
the real embedding model): uploads (multipart and raw, staged when large), listings, search,
answers with citations, deletes, size limits (413) and refused documents (400, nothing stored),
roles, and one tenant never seeing another's collections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from actors.knowledge_requests import INLINE_MAX_BYTES
from storage.knowledge_store import KnowledgeStore
from tests.serve_apps.test_app_harness import Platform, client, error_code, platform

__all__ = ["client", "platform"]

API = "/api/v1"
CORPUS = Path(__file__).resolve().parents[1] / "data" / "knowledge_corpus"


async def upload(client: httpx.AsyncClient, headers: dict[str, str], path: Path,
                 collection: str = "handbook", **form: str) -> httpx.Response:
    return await client.post(f"{API}/knowledge/documents", params={"collection": collection},
                             headers=headers, files={"file": (path.name, path.read_bytes())},
                             data=form)


async def stored_chunks(platform: Platform, tenant: str, collection: str) -> int:
    async with await KnowledgeStore.open(platform.url) as store:
        return await store.chunk_count(tenant, collection)


async def test_upload_list_search_answer_and_delete(platform: Platform, client) -> None:
    acme = platform.bearer("acme", "submitter")
    for name in ("refunds.md", "leave-policy.md", "security.md"):
        added = await upload(client, acme, CORPUS / name, document_id=name.split(".")[0],
                             metadata='{"team": "ops"}')
        assert added.status_code == 201, added.text
        assert added.json()["chunks"] >= 1 and added.headers["Location"].startswith(
            f"{API}/tasks/")
    listed = await client.get(f"{API}/knowledge/collections", headers=acme)
    assert [c["name"] for c in listed.json()["collections"]] == ["handbook"]
    documents = await client.get(f"{API}/knowledge/collections/handbook/documents",
                                 headers=acme)
    assert {d["id"] for d in documents.json()["documents"]} == {
        "refunds", "leave-policy", "security"}
    assert documents.json()["documents"][0]["metadata"] == {"team": "ops"}

    viewer = platform.bearer("acme", "viewer")
    found = await client.post(f"{API}/knowledge/search", headers=viewer,
                              json={"query": "how many vacation days per year", "k": 2})
    assert found.status_code == 200, found.text
    assert found.json()["hits"][0]["document_id"] == "leave-policy"
    answer = await client.post(f"{API}/knowledge/answer", headers=viewer,
                               json={"question": "How long do customers have to ask for a "
                                                 "refund?"})
    body = answer.json()
    assert answer.status_code == 200 and body["found"] and body["citations"], body
    assert body["citations"][0]["document_id"] == "refunds" and "[1]" in body["answer"]

    deleted = await client.delete(f"{API}/knowledge/collections/handbook/documents/refunds",
                                  headers=acme)
    assert deleted.status_code == 200 and deleted.json()["deleted"]
    again = await client.post(f"{API}/knowledge/search", headers=viewer,
                              json={"query": "refund window", "k": 10})
    assert "refunds" not in {hit["document_id"] for hit in again.json()["hits"]}
    gone = await client.delete(f"{API}/knowledge/collections/handbook/documents/refunds",
                               headers=acme)
    assert gone.status_code == 404


async def test_another_tenant_sees_nothing_of_it(platform: Platform, client) -> None:
    acme = platform.bearer("acme", "submitter")
    assert (await upload(client, acme, CORPUS / "refunds.md")).status_code == 201
    globex = platform.bearer("globex", "admin")
    listed = await client.get(f"{API}/knowledge/collections", headers=globex)
    assert listed.status_code == 200 and listed.json()["collections"] == []
    for response in (
            await client.get(f"{API}/knowledge/collections/handbook/documents",
                             headers=globex),
            await client.post(f"{API}/knowledge/search", headers=globex,
                              json={"query": "refund", "collection": "handbook"}),
            await client.post(f"{API}/knowledge/answer", headers=globex,
                              json={"question": "refund window?", "collection": "handbook"}),
            await client.delete(f"{API}/knowledge/collections/handbook/documents/refunds",
                                headers=globex)):
        assert response.status_code == 404, response.text
        assert "Refund" not in response.text
    routed = await client.post(f"{API}/knowledge/answer", headers=globex,
                               json={"question": "what does the handbook say about refunds?"})
    assert routed.status_code == 404 and "no knowledge collections" in routed.text
    assert await stored_chunks(platform, "acme", "handbook") > 0


async def test_a_viewer_cannot_upload_or_delete(platform: Platform, client) -> None:
    viewer = platform.bearer("acme", "viewer")
    refused = await upload(client, viewer, CORPUS / "refunds.md")
    assert refused.status_code == 403 and error_code(refused) == "forbidden"
    assert await stored_chunks(platform, "acme", "handbook") == 0


async def test_oversized_and_corrupt_uploads_are_refused_and_store_nothing(
        platform: Platform) -> None:
    acme = platform.bearer("acme", "submitter")
    async with platform.client(knowledge_max_upload_bytes=4096) as small:
        too_big = await small.post(f"{API}/knowledge/documents",
                                   params={"collection": "handbook", "name": "big.txt"},
                                   headers=acme, content=b"x " * 5000)
        assert too_big.status_code == 413 and error_code(too_big) == "payload_too_large"
        corrupt = await small.post(f"{API}/knowledge/documents",
                                   params={"collection": "handbook", "name": "scan.pdf"},
                                   headers=acme, content=b"%PDF-1.7\n garbage")
        assert corrupt.status_code == 400 and "scan.pdf" in corrupt.json()["error"]["message"]
        unnamed = await small.post(f"{API}/knowledge/documents", headers=acme,
                                   content=b"some text")
        assert unnamed.status_code == 400 and "name" in unnamed.text
    assert await stored_chunks(platform, "acme", "handbook") == 0


async def test_a_document_larger_than_a_task_payload_is_staged_and_ingested(
        platform: Platform) -> None:
    acme = platform.bearer("acme", "submitter")
    text = ("Pallet returns are inspected within five working days of arrival. " * 12_000)
    assert len(text) > INLINE_MAX_BYTES
    async with platform.client(max_body_bytes=64 * 1024) as api:
        added = await api.post(f"{API}/knowledge/documents",
                               params={"collection": "big", "name": "pallets.txt"},
                               headers=acme, content=text.encode())
    assert added.status_code in (201, 202), added.text
    task = await platform.orchestrator.wait(added.json()["task_id"], 120)
    result: Any = task.result
    assert task.status.value == "succeeded" and result["size_bytes"] == len(text)
    assert await stored_chunks(platform, "acme", "big") == result["chunks"]
