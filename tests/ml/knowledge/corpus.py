"""The handbook corpus of the knowledge tests and how it is ingested."""

from __future__ import annotations

from pathlib import Path

from ml.embeddings import Embedder
from ml.knowledge.chunking import Chunker
from ml.knowledge.collections import load_collection
from ml.knowledge.ingest import ingest_document
from ml.knowledge.search import CollectionIndex
from storage.knowledge_store import KnowledgeStore

CORPUS = Path(__file__).resolve().parents[2] / "data" / "knowledge_corpus"
QUESTIONS = CORPUS.parent / "knowledge_questions.jsonl"


async def ingest_corpus(store: KnowledgeStore, tenant: str, collection: str,
                        encoder: Embedder, chunker: Chunker) -> CollectionIndex:
    """Every corpus file stored as a document (id: the file's stem), then loaded."""
    for path in sorted(CORPUS.iterdir()):
        await ingest_document(store, tenant, collection, path.name, path.read_bytes(),
                              encode=encoder.encode, chunker=chunker, document_id=path.stem,
                              metadata={"kind": path.suffix.lstrip(".")})
    return await load_collection(store, tenant, collection)
