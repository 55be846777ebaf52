"""The client's knowledge calls (`Client.knowledge_*`): a tenant's document collections through
tasks of the `knowledge` agent, submitted as that tenant and waited for.

    client.knowledge_add(Path("docs/refunds.md"), collection="handbook")
    client.knowledge_answer("how long do refunds take?", collection="handbook")

Guarantees: every call is one or more tasks of the `knowledge` type (`actors.knowledge_requests`),
so the agent's guarantees hold (tenant from the task, bad documents store nothing). A document
larger than a task payload is staged in parts, each part a task acknowledged before the ingest
task that names them is submitted. A refused input is `InvalidRequest` with the agent's message;
a task that did not finish in time, or failed for a reason retrying may cure, is
`PlatformUnavailable` naming the task.
"""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

from storage.errors import InvalidRequest
from storage.messages import Task, TaskRequest


class KnowledgeCalls:
    """The knowledge calls of `cluster.client.Client`, which provides `submit_many` and
    `wait_many`."""

    def submit_many(self, requests: builtins.list[TaskRequest]) -> builtins.list[str]:
        raise NotImplementedError

    def wait_many(self, task_ids: builtins.list[str],
                  timeout_s: float | None = None) -> builtins.list[Task]:
        raise NotImplementedError

    def _knowledge(self, requests: builtins.list[TaskRequest],
                   timeout_s: float | None) -> builtins.list[Any]:
        """Submit knowledge tasks together and their results, once all finished (see
        `actors.knowledge_requests.outcome` for the errors)."""
        from actors.knowledge_requests import outcome

        ids = self.submit_many(requests)
        return [outcome(task) for task in self.wait_many(ids, timeout_s)]

    def knowledge_add(self, source: Path | str | bytes, *, collection: str = "default",
                      name: str | None = None, tenant: str = "default",
                      media_type: str | None = None, metadata: dict[str, Any] | None = None,
                      document_id: str | None = None,
                      timeout_s: float = 600.0) -> dict[str, Any]:
        """Add one document (a file's path, or its bytes with `name`) to `tenant`'s
        `collection`, replacing one of the same name (or `document_id`): {"document_id",
        "name", "chunks", "replaced", ...}. A document larger than a task payload is staged in
        parts first. `InvalidRequest` names what is wrong with a document nobody can ingest
        (its type, size, a corrupt PDF); nothing of it is stored then."""
        from actors import knowledge_requests as kr

        if isinstance(source, bytes):
            if not name:
                raise InvalidRequest("give the document's name (its extension gives its type)")
            content = source
        else:
            path = Path(source)
            if not path.is_file():
                raise InvalidRequest(f"{path} is not a file")
            content, name = path.read_bytes(), name or path.name
        options: dict[str, Any] = {"media_type": media_type, "metadata": metadata,
                                   "document_id": document_id, "timeout_s": timeout_s}
        if len(content) <= kr.INLINE_MAX_BYTES:
            ingest = kr.ingest_request(tenant, collection, name, content=content, **options)
        else:
            upload_id = kr.new_upload_id()
            staged = kr.stage_requests(content, upload_id, tenant)
            self._knowledge(staged, timeout_s)
            ingest = kr.ingest_request(tenant, collection, name, upload_id=upload_id,
                                       parts=len(staged), **options)
        result: dict[str, Any] = self._knowledge([ingest], timeout_s)[0]
        return result

    def knowledge_add_many(self, paths: builtins.list[Path], *, collection: str = "default",
                           tenant: str = "default", timeout_s: float = 600.0
                           ) -> builtins.list[dict[str, Any] | InvalidRequest]:
        """Add several files at once: their ingest tasks are submitted together, so a replica
        ingests them concurrently (and embeds them in shared batches). Per file, in order, its
        result or the `InvalidRequest` that refused it (nothing of that file is stored)."""
        from actors import knowledge_requests as kr
        from actors.knowledge_requests import outcome

        results: dict[int, dict[str, Any] | InvalidRequest] = {}
        inline: builtins.list[tuple[int, TaskRequest]] = []
        for number, path in enumerate(paths):
            content = Path(path).read_bytes()
            if len(content) <= kr.INLINE_MAX_BYTES:
                inline.append((number, kr.ingest_request(tenant, collection, Path(path).name,
                                                         content=content,
                                                         timeout_s=timeout_s)))
                continue
            try:
                results[number] = self.knowledge_add(path, collection=collection,
                                                     tenant=tenant, timeout_s=timeout_s)
            except InvalidRequest as exc:
                results[number] = exc
        if inline:
            ids = self.submit_many([request for _, request in inline])
            for (number, _), task in zip(inline, self.wait_many(ids, timeout_s)):
                try:
                    results[number] = outcome(task)
                except InvalidRequest as exc:
                    results[number] = exc
        return [results[number] for number in range(len(paths))]

    def knowledge_search(self, query: str, *, collection: str | None = None, k: int = 5,
                         where: dict[str, Any] | None = None, tenant: str = "default",
                         timeout_s: float = 60.0) -> dict[str, Any]:
        """The best `k` chunks of `tenant`'s `collection` for `query`: {"hits": [{"text",
        "score", "document_id", "document_name", "start", "end", ...}]}."""
        from actors.knowledge_requests import request

        result: dict[str, Any] = self._knowledge([request(
            "search", {"collection": collection, "query": query, "k": k, "where": where},
            tenant, description=query)], timeout_s)[0]
        return result

    def knowledge_answer(self, question: str, *, collection: str | None = None, k: int = 3,
                         mode: str = "auto", where: dict[str, Any] | None = None,
                         tenant: str = "default", timeout_s: float = 120.0) -> dict[str, Any]:
        """An answer to `question` from `tenant`'s `collection` with citations: {"answer"
        (with [n] markers), "found", "citations", "mode"}; "not found in the collection" when
        retrieval is not confident."""
        from actors.knowledge_requests import request

        result: dict[str, Any] = self._knowledge([request(
            "answer", {"collection": collection, "question": question, "k": k, "mode": mode,
                       "where": where}, tenant, description=question)], timeout_s)[0]
        return result

    def knowledge_delete(self, document_id: str | None = None, *, collection: str,
                         all: bool = False, tenant: str = "default",
                         timeout_s: float = 60.0) -> dict[str, Any]:
        """Delete a document (or, with `all`, the whole collection) of `tenant`."""
        from actors.knowledge_requests import request

        if (document_id is None) == (not all):
            raise InvalidRequest("give a document id, or all=True for the whole collection")
        result: dict[str, Any] = self._knowledge([request(
            "delete", {"collection": collection, "document_id": document_id,
                       "all": True if all else None}, tenant)], timeout_s)[0]
        return result

    def knowledge_collections(self, tenant: str = "default",
                              timeout_s: float = 60.0) -> builtins.list[dict[str, Any]]:
        """`tenant`'s collections: [{"name", "dimension", "created_at"}]."""
        from actors.knowledge_requests import request

        found: builtins.list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self._knowledge([request("list", {"limit": 1000, "cursor": cursor},
                                            tenant)], timeout_s)[0]
            found.extend(page["collections"])
            cursor = page.get("cursor")
            if not cursor:
                return found

    def knowledge_documents(self, collection: str, *, tenant: str = "default",
                            limit: int = 100, cursor: str | None = None,
                            timeout_s: float = 60.0) -> dict[str, Any]:
        """A page of a collection's documents: {"documents": [{"id", "name", "chunks", ...}],
        "cursor" (of the next page, or None)}."""
        from actors.knowledge_requests import request

        result: dict[str, Any] = self._knowledge([request(
            "list", {"collection": collection, "limit": limit, "cursor": cursor}, tenant)],
            timeout_s)[0]
        return result
