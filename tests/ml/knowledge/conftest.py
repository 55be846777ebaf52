"""What the knowledge tests share: a fresh SQLite store, the default chunker, and the handbook
corpus ingested into the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ml.embeddings import Embedder
from ml.knowledge.chunking import Chunker
from ml.knowledge.search import CollectionIndex
from storage.database import migrate_async
from storage.knowledge_store import KnowledgeStore
from tests.ml.knowledge.corpus import ingest_corpus


@pytest.fixture
async def knowledge_store(tmp_path: Path) -> AsyncIterator[KnowledgeStore]:
    url = f"sqlite:///{tmp_path / 'knowledge.db'}"
    await migrate_async(url)
    async with await KnowledgeStore.open(url) as store:
        yield store


@pytest.fixture(scope="session")
def chunker() -> Chunker:
    return Chunker()


@pytest.fixture
async def handbook(knowledge_store: KnowledgeStore, shared: Embedder,
                   chunker: Chunker) -> CollectionIndex:
    return await ingest_corpus(knowledge_store, "acme", "handbook", shared, chunker)
