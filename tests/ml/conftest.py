"""What the ml tests share: the process's embedding model, and a router of the built-in agents."""

from __future__ import annotations

import pytest

from actors.agents import BUILTIN_SPECS
from ml.embeddings import Embedder, embedder
from ml.semantic_router import SemanticRouter


@pytest.fixture(scope="session")
def shared() -> Embedder:
    """The process-wide embedder; the model loads once for the whole session."""
    return embedder()


@pytest.fixture(scope="module")
def router(shared: Embedder) -> SemanticRouter:
    """The built-in agents' router with the default (fitted) policy; tests must not mutate it."""
    return SemanticRouter(BUILTIN_SPECS, shared)
