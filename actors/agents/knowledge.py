"""The `knowledge` agent: a tenant's own documents, ingested, searched and answered from with
citations. Built in and always registered.

Payload (the tenant is always the task's, never the payload's; `collection` names one of the
tenant's collections; without it, the one the description names as a word ("what does the
handbook say ..." → `handbook`), else `default` if it exists, else the tenant's only one):

    {"operation": "answer", "question"?, "k"?, "where"?, "mode"?: auto|extractive|grounded}
    {"operation": "search", "query"?, "k"?, "where"?}      # question/query: else the description
    {"operation": "ingest", "name", "text" | "content_base64" | "upload_id" + "parts",
     "media_type"?, "metadata"?, "document_id"?}
    {"operation": "delete", "document_id" | "all": true}
    {"operation": "list"}                                 # collections, or a collection's documents
    {"operation": "stage", "upload_id", "part", "data"}   # one part of a large upload (base64)

With no operation, a payload carrying a document is an ingest and anything else an answer, so a
routed "what does the handbook say about refunds?" with an empty payload answers it.

Large documents. A task payload is small (1 MB by default); a document up to
`knowledge_max_upload_bytes` (20 MB by default) is staged first in `storage.knowledge_uploads`:
by the API in one transaction, or by the client one `stage` task per part. The ingest task names
the upload; only once it is staged is that task submitted, so accepted work is never lost.
Ingesting reads the parts, extracts, chunks and embeds the text, then stores the document and
all its chunks in one transaction (`storage.knowledge_store`) and deletes the staged parts.
Anything wrong with the document (type, size, a corrupt or encrypted PDF, no text, a missing
part) is `InvalidTaskInput` naming it, raised before anything is stored, and its staged parts
are deleted: bad input changes nothing. An ingest retried after a crash replaces the document it
may already have stored (same name or id): execution is at least once, the outcome once.

Answers are extractive with citations by default (`ml.knowledge.answer`). Where a language
model is configured, `mode` auto (and grounded) asks it for an answer grounded in the best
chunks (`actors.agents.knowledge_grounded`); either way "not found in the collection" when
retrieval is not confident, never an unsupported answer.

Errors: bad input is `InvalidTaskInput` naming the field or document; a collection or document
the tenant does not have is `InvalidTaskInput` with `reason: "not_found"` in its details (the
API answers 404, exactly as for another tenant's). Storage or model trouble is retried.

Replicas hold collections in memory within `knowledge_memory_bytes` and keep them current with
storage (`actors.knowledge_library`); the texts of concurrent tasks are embedded in shared
batches (`actors.knowledge_encoder`), the model loaded on a replica's first use.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import numpy as np

from actors.agent import Agent, invalid
from actors.agents import knowledge_payload as p
from actors.agents.knowledge_grounded import extractive_result, grounded_answer
from actors.errors import InvalidTaskInput
from actors.knowledge_encoder import BatchingEncoder
from actors.knowledge_library import KnowledgeLibrary, PreparedDocument
from actors.knowledge_metrics import knowledge_metrics
from ml.config import ML_RESOURCE
from ml.knowledge.answer import DEFAULT_MIN_SIMILARITY, extractive_answer
from ml.knowledge.chunking import Chunk, Chunker
from ml.knowledge.documents import DEFAULT_MAX_BYTES, ExtractedDocument, extract
from ml.knowledge.search import CollectionIndex
from ml.llm.settings import NO_MODEL_HINT
from storage.errors import Conflict, InvalidRequest, NotFound
from storage.knowledge_store import KnowledgeStore, NewDocument
from storage.knowledge_uploads import KnowledgeUploads
from storage.messages import AgentSpec, AgentTask, Resources, utcnow

DEFAULT_MEMORY_BYTES = 512 * 1024 * 1024
DEFAULT_COLLECTION = "default"
STAGED_UPLOAD_TTL = timedelta(hours=24)
MAX_PART_BYTES = 600_000  # raw bytes of one staged part: under 1 MB as base64 in a payload
NOT_FOUND_REASON = "not_found"  # in an error's details: the collection or document does not exist


class Knowledge(Agent):
    """Per-tenant document collections: ingest, search, answer with citations, delete."""

    spec = AgentSpec(
        name="knowledge",
        description="The tenant's own document knowledge base: search the company's uploaded "
        "documents, handbook, policies and internal docs, answer questions from them with "
        "citations, and add or remove documents in a collection.",
        capabilities=(
            "search our own uploaded documents and internal knowledge base",
            "answer a question from the company handbook or policy documents with citations",
            "find what our internal docs say about a topic",
            "add documents (text, Markdown, HTML, PDF) to a searchable knowledge collection",
            "remove a document from a knowledge collection",
        ),
        examples=(
            "what does the employee handbook say about overtime?",
            "search our docs for the instructions to connect to the office network",
            "find in the knowledge base how to request parental leave",
            "according to our internal documentation, how do I file an expense claim?",
            "look up our company policy on working from home",
            "what does our handbook say about sick days?",
            "search the knowledge base for the incident escalation steps",
            "find the section of our docs about data retention",
            "ask the knowledge base how long delivery takes",
            "what do our internal docs say about onboarding new hires?",
            "which of our documents mention the on-call rotation?",
            "search our uploaded documents for the warranty terms",
            "answer from our policy documents: can contractors expense meals?",
            "what is our return policy according to the docs?",
            "check the company wiki for the laptop replacement policy",
            "ingest this PDF into our knowledge base",
            "add these documents to the handbook collection",
            "remove the outdated travel policy from the knowledge base",
            "list the documents in our knowledge collection",
            "per the handbook, who approves holiday requests?",
            "check our documentation for the steps to deploy a new service",
            "search the product manuals for the installation steps",
            "which internal document explains the release process?",
            "per our documentation, what are the office opening hours?",
            "what is our company policy on expensing client dinners?",
            "is overtime paid extra under our HR policies?",
            "what does the runbook say to do when the primary database fails over?",
            "find the steps in our support playbook for handling a refund request",
            "look up the standard operating procedure for receiving deliveries",
            "what does our style guide say about the Oxford comma?",
            "cite the internal document that defines our service level agreement",
            "how many days of annual leave do employees get under our policy?",
            "where in our docs is the API rate limit explained?",
            "what do the product FAQs we uploaded say about battery life?",
            "search the uploaded contracts for the termination clause",
            "according to the benefits guide, is dental care covered?",
            "answer with citations from our knowledge collection: who owns the billing service?",
            "what's the procedure in our handbook for reporting a safety incident?",
            "what does our security runbook say about rotating credentials?",
        ),
        # a small CPU share: every built-in pool at its default size fits a 2-CPU head (Ray's
        # CPUs are logical; embedding bursts run on one thread in any case)
        resources=Resources(num_cpus=0.05, memory_mb=1536, custom=dict(ML_RESOURCE)),
        concurrency=8,
        replicas=1,
        payload_hint={"operation": "answer", "collection": "handbook",
                      "question": "How long do refunds take?"},
    )

    def __init__(self) -> None:
        self.store: KnowledgeStore | None = None
        self.uploads: KnowledgeUploads | None = None
        self.library: KnowledgeLibrary | None = None
        self.encoder: Any = None  # anything with `encode(texts) -> unit rows`; loaded on first use
        self.chunker: Chunker | None = None
        self._batcher: BatchingEncoder | None = None
        self.metrics = knowledge_metrics()

    @property
    def settings(self) -> dict[str, Any]:
        return self.context.settings if self.context else {}

    async def setup(self) -> None:
        if self.context is None:
            raise RuntimeError("the knowledge agent needs its AgentContext before setup()")
        self.store = await KnowledgeStore.open(self.context.database_url)
        self.uploads = KnowledgeUploads(self.store.engine)
        self.library = KnowledgeLibrary(
            self.store, self.uploads, metrics=self.metrics, replica=self.context.replica,
            max_bytes=int(self.settings.get("knowledge_memory_bytes") or DEFAULT_MEMORY_BYTES))

    async def close(self) -> None:
        """Release the database connections (embedders and tests call this)."""
        if self.store is not None:
            await self.store.close()
            self.store = self.uploads = self.library = None

    async def run(self, task: AgentTask) -> dict[str, Any]:
        if self.library is None:
            raise RuntimeError("the knowledge agent was not set up")
        operation = p.operation_of(task.payload)
        try:
            if operation == "stage":
                return await self._stage(task)
            if operation == "list":
                return await self._list(task)
            collection = await self._collection(task, operation)
            if operation == "ingest":
                return await self._ingest(task, collection)
            if operation == "delete":
                return await self._delete(task, collection)
            if operation == "search":
                return await self._search(task, collection)
            return await self._answer(task, collection)
        except (NotFound, InvalidRequest, Conflict) as exc:  # bad input: never retried
            found = {"reason": NOT_FOUND_REASON} if isinstance(exc, NotFound) else {}
            raise InvalidTaskInput(exc.message, {**exc.details, **found}) from exc

    # --- collections ---------------------------------------------------------------------

    async def _collection(self, task: AgentTask, operation: str) -> str:
        named = p.named_collection(task.payload)
        if named is not None:
            return named
        assert self.store is not None
        found, _ = await self.store.collections(task.tenant, limit=1000)
        names = [c.name for c in found]
        chosen = p.collection_in(task.description, names)
        if chosen is not None:
            return chosen
        if not names and operation != "ingest":
            raise invalid("this tenant has no knowledge collections yet: add documents first "
                          "(`ymera knowledge add DIR --collection NAME`)", field="collection",
                          reason=NOT_FOUND_REASON)
        if DEFAULT_COLLECTION in names or operation == "ingest":
            return DEFAULT_COLLECTION
        if len(names) == 1:
            return names[0]
        raise invalid(f"say which collection in payload 'collection': this tenant has "
                      f"{', '.join(sorted(names)[:20])}", field="collection")

    @asynccontextmanager
    async def _reading(self, task: AgentTask, collection: str
                       ) -> AsyncIterator[CollectionIndex]:
        assert self.library is not None
        try:
            async with self.library.reading(task.tenant, collection) as index:
                yield index
        except NotFound as exc:
            raise invalid(f"there is no collection {collection!r}", field="collection",
                          collection=collection, reason=NOT_FOUND_REASON) from exc

    # --- operations ----------------------------------------------------------------------

    async def _search(self, task: AgentTask, collection: str) -> dict[str, Any]:
        payload = task.payload
        query = p.text_field(payload, "query", task.description)
        k = p.whole(payload, "k", 5, 1, p.MAX_K)
        where = p.where_of(payload)
        vector = (await self._encode([query]))[0]
        started = time.perf_counter()
        async with self._reading(task, collection) as index:
            hits = index.search(vector, query, k=k, where=where)
        self.metrics.searched(task.tenant, "search", time.perf_counter() - started)
        return {"collection": collection, "query": query,
                "hits": [{"chunk_id": h.chunk_id, "document_id": h.document_id,
                          "document_name": h.document_name, "text": h.text, "start": h.start,
                          "end": h.end, "score": h.score, "dense_score": h.dense_score,
                          "lexical_score": h.lexical_score} for h in hits]}

    async def _answer(self, task: AgentTask, collection: str) -> dict[str, Any]:
        payload = task.payload
        question = p.text_field(payload, "question", task.description)
        k = p.whole(payload, "k", 3, 1, 10)
        where = p.where_of(payload)
        mode = p.mode_of(payload)
        configured = bool(self.settings.get("llm_configured")) and self.llm is not None
        if mode == "grounded" and not configured:
            raise invalid(f"a grounded answer needs a language model: {NO_MODEL_HINT}",
                          field="mode")
        encode = await self._encoder()
        min_similarity = float(self.settings.get("knowledge_min_similarity",
                                                 DEFAULT_MIN_SIMILARITY))
        grounded = mode != "extractive" and configured
        started = time.perf_counter()
        async with self._reading(task, collection) as index:
            answer = await asyncio.to_thread(
                extractive_answer, index, question, encode, where=where,
                min_similarity=min_similarity, source_chunks=k)
        self.metrics.searched(task.tenant, "answer", time.perf_counter() - started)
        if not grounded:
            return {"collection": collection, "question": question,
                    **extractive_result(answer)}
        assert self.llm is not None
        model = payload.get("model")
        result = await grounded_answer(
            self.llm, task, question, answer.hits, answer.confidence, answer,
            min_similarity=min_similarity, model=model if isinstance(model, str) else None)
        return {"collection": collection, "question": question, **result}

    async def _ingest(self, task: AgentTask, collection: str) -> dict[str, Any]:
        assert self.library is not None and self.uploads is not None
        payload = task.payload
        limit = int(self.settings.get("knowledge_max_upload_bytes") or DEFAULT_MAX_BYTES)
        sources = [s for s in ("upload_id", "text", "content_base64") if s in payload]
        if len(sources) != 1:
            raise invalid("ingest takes exactly one of payload 'text', 'content_base64' or "
                          "'upload_id' (with 'parts')", fields=["text", "content_base64",
                                                                 "upload_id"])
        upload_id = None
        if sources[0] == "upload_id":
            upload_id = p.checked_name(payload["upload_id"], "upload_id", 64)
            parts = p.whole(payload, "parts", 1, 1, 10_000)
            await self.uploads.purge_before(task.tenant, utcnow() - STAGED_UPLOAD_TTL)
            try:
                content = await self.uploads.read(task.tenant, upload_id, parts, limit)
            except InvalidRequest as exc:
                await self.uploads.discard(task.tenant, upload_id)
                raise invalid(exc.message, **exc.details) from exc
        elif sources[0] == "text":
            text = payload["text"]
            if not isinstance(text, str):
                raise invalid("payload 'text' must be a string", field="text")
            content = text.encode()
        else:
            content = p.decoded(payload["content_base64"], "content_base64")
        fields = p.document_fields(payload, content)
        try:
            prepared = await self._prepare(fields, content, limit)
        except InvalidTaskInput:
            if upload_id is not None:
                await self.uploads.discard(task.tenant, upload_id)
            raise
        written = await self.library.write(task.tenant, collection, prepared)
        if upload_id is not None:
            await self.uploads.discard(task.tenant, upload_id)
        document = written.document
        return {"collection": collection, "document_id": document.id, "name": document.name,
                "media_type": document.media_type, "size_bytes": document.size_bytes,
                "chunks": len(written.chunk_ids), "replaced": written.replaced}

    async def _prepare(self, fields: dict[str, Any], content: bytes,
                       limit: int) -> PreparedDocument:
        """The document extracted, chunked and embedded; `InvalidTaskInput` naming it when it
        cannot be (nothing is stored before this succeeds)."""
        name = fields["name"]
        chunker = self.chunker or Chunker()
        self.chunker = chunker

        def extract_and_split() -> tuple[ExtractedDocument, list[Chunk]]:
            extracted = extract(name, content, fields["media_type"], max_bytes=limit)
            return extracted, chunker.split(extracted.text)

        try:
            extracted, chunks = await asyncio.to_thread(extract_and_split)
        except InvalidRequest as exc:
            raise InvalidTaskInput(exc.message, {"document": name, **exc.details}) from exc
        if not chunks:
            raise invalid(f"document {name!r} has no text to index", document=name)
        vectors = await self._encode([c.text for c in chunks])
        return PreparedDocument(
            NewDocument(name=name, media_type=extracted.media_type, sha256=extracted.sha256,
                        size_bytes=extracted.size_bytes, metadata=fields["metadata"],
                        id=fields["document_id"]), chunks, vectors)

    async def _delete(self, task: AgentTask, collection: str) -> dict[str, Any]:
        assert self.library is not None
        payload = task.payload
        if payload.get("all") is True and "document_id" not in payload:
            documents = await self.library.delete_collection(task.tenant, collection)
            return {"collection": collection, "deleted_collection": True,
                    "documents": documents}
        document_id = p.checked_name(payload.get("document_id"), "document_id", 64)
        chunks = await self.library.delete_document(task.tenant, collection, document_id)
        return {"collection": collection, "document_id": document_id, "deleted": True,
                "chunks": chunks}

    async def _list(self, task: AgentTask) -> dict[str, Any]:
        assert self.store is not None
        payload = task.payload
        limit = p.whole(payload, "limit", 100, 1, 1000)
        cursor = payload.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise invalid("payload 'cursor' must be the cursor of a previous page",
                          field="cursor")
        collection = p.named_collection(payload)
        if collection is None:
            found, after = await self.store.collections(task.tenant, limit=limit,
                                                        cursor=cursor)
            return {"collections": [{"name": c.name, "dimension": c.dimension,
                                     "created_at": c.created_at.isoformat()} for c in found],
                    "cursor": after}
        await self.store.collection(task.tenant, collection)  # NotFound when there is none
        documents, after = await self.store.documents(task.tenant, collection, limit=limit,
                                                      cursor=cursor)
        return {"collection": collection, "cursor": after, "documents": [
            {"id": d.id, "name": d.name, "media_type": d.media_type, "metadata": d.metadata,
             "size_bytes": d.size_bytes, "chunks": d.chunk_count,
             "created_at": d.created_at.isoformat(),
             "replaced_at": d.replaced_at.isoformat() if d.replaced_at else None}
            for d in documents]}

    async def _stage(self, task: AgentTask) -> dict[str, Any]:
        assert self.uploads is not None
        payload = task.payload
        upload_id = p.checked_name(payload.get("upload_id"), "upload_id", 64)
        part = p.whole(payload, "part", 0, 0, 9_999)
        data = p.decoded(payload.get("data"), "data")
        if len(data) > MAX_PART_BYTES:
            raise invalid(f"a staged part is at most {MAX_PART_BYTES} bytes, not {len(data)}",
                          field="data")
        await self.uploads.stage_part(task.tenant, upload_id, part, data)
        return {"upload_id": upload_id, "part": part, "bytes": len(data)}

    # --- the encoder ---------------------------------------------------------------------

    async def _encoder(self) -> Any:
        if self.encoder is None:  # on the platform, the model the router holds for every replica
            from actors.shared_embedder import text_encoder

            self.encoder = await asyncio.to_thread(text_encoder, self.context)
        return self.encoder.encode

    async def _encode(self, texts: list[str]) -> np.ndarray:
        """The texts' vectors, encoded in batches shared with the replica's other tasks."""
        if self._batcher is None:
            self._batcher = BatchingEncoder(await self._encoder())
        return await self._batcher.encode(texts)
