"""all-MiniLM-L6-v2 in NumPy: the same sentence embeddings as sentence-transformers, without torch.

The model is a 6-layer BERT (hidden size 384, 12 heads, GELU feed-forward of 1536) followed by
mean pooling over the text's word pieces and L2 normalisation; its weights are read from the
bundled `model.safetensors` (mapped, not copied, where used as stored) and its word pieces from the bundled `tokenizer.json` (the Rust
`tokenizers` library, as sentence-transformers' fast tokenizer uses). Texts longer than
`max_seq_length` (256 word pieces, from `sentence_bert_config.json`) are truncated as
sentence-transformers truncates them.

Why: torch and transformers cost a process about 600 MB resident before any work, for what is
here a few matrix products per text. The outputs agree with sentence-transformers' to about
1e-6 per component (`tests/ml/test_minilm.py` compares the two on the routing examples).

`NumpyMiniLM` has the two methods `ml.embeddings.Embedder` uses of a model: `encode` and
`get_embedding_dimension`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

LAYER_NORM_EPS = 1e-12


class NumpyMiniLM:
    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        config = json.loads((path / "config.json").read_text())
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.max_seq_length = int(json.loads(
            (path / "sentence_bert_config.json").read_text())["max_seq_length"])
        self._w: dict[str, np.ndarray] = {}
        for name, value in read_safetensors(path / "model.safetensors").items():
            if value.dtype != np.float32:
                continue  # position ids: positions are counted here
            if name.endswith(".weight") and value.ndim == 2 and "embeddings" not in name:
                # Linear layers are stored (out, in); kept transposed so a layer is `x @ w + b`.
                self._w[name] = np.ascontiguousarray(value.T)
            elif "embeddings" in name and value.ndim == 2:
                self._w[name] = value  # read in place from the mapped file (shared, 47 MB)
            else:
                self._w[name] = np.array(value)
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)
        self.tokenizer.no_padding()

    def get_embedding_dimension(self) -> int:
        return self.hidden

    def encode(self, texts: Sequence[str], batch_size: int = 64, convert_to_numpy: bool = True,
               normalize_embeddings: bool = True, show_progress_bar: bool = False,
               **_: Any) -> np.ndarray:
        """One float32 row per text; unit length with `normalize_embeddings`. Texts of a batch
        are taken in order of length so that little of each batch is padding."""
        texts = list(texts)
        out = np.zeros((len(texts), self.hidden), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            out[chosen] = self._embed([texts[i] for i in chosen])
        if normalize_embeddings:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), np.float32(1e-12))
        return out

    def _embed(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), length), dtype=np.int64)
        mask = np.zeros((len(texts), length), dtype=np.float32)
        for row, encoding in enumerate(encodings):
            ids[row, :len(encoding.ids)] = encoding.ids
            mask[row, :len(encoding.ids)] = 1.0
        w = self._w
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:length]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        # Padding is kept out of every attention: a large negative score before the softmax.
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for layer in range(self.layers):
            x = self._layer(x, bias, f"encoder.layer.{layer}.")
        summed = (x * mask[:, :, None]).sum(axis=1)
        return summed / np.maximum(mask.sum(axis=1, keepdims=True), np.float32(1e-9))

    def _layer(self, x: np.ndarray, bias: np.ndarray, p: str) -> np.ndarray:
        """One encoder layer. Dense products run on the batch's word pieces as one 2-D matrix
        (one BLAS call each); attention runs per text and head."""
        w = self._w
        batch, length, _ = x.shape
        size = self.hidden // self.heads
        flat = x.reshape(batch * length, self.hidden)

        def dense(inputs: np.ndarray, name: str) -> np.ndarray:
            out = inputs @ w[f"{p}{name}.weight"]
            out += w[f"{p}{name}.bias"]
            return out

        def heads(name: str) -> np.ndarray:
            return (dense(flat, f"attention.self.{name}")
                    .reshape(batch, length, self.heads, size).transpose(0, 2, 1, 3))

        q, k, v = heads("query"), heads("key"), heads("value")
        scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(1.0 / np.sqrt(size)) + bias
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch * length, self.hidden)
        attended = dense(context, "attention.output.dense")
        attended += flat
        flat = _layer_norm(attended, w[f"{p}attention.output.LayerNorm.weight"],
                           w[f"{p}attention.output.LayerNorm.bias"])
        out = dense(_gelu(dense(flat, "intermediate.dense")), "output.dense")
        out += flat
        return _layer_norm(out, w[f"{p}output.LayerNorm.weight"],
                           w[f"{p}output.LayerNorm.bias"]).reshape(batch, length, self.hidden)


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file, as read-only arrays over the file mapped into memory
    (an 8-byte little-endian header length, a JSON header of names, dtypes, shapes and byte
    ranges, then the data). Pages of the file are shared by every process that maps it."""
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
    with open(path, "rb") as file:
        size = int.from_bytes(file.read(8), "little")
        header = json.loads(file.read(size))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + size)
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        tensors[name] = data[start:end].view(dtypes[meta["dtype"]]).reshape(meta["shape"])
    return tensors


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    variance = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / np.sqrt(variance + np.float32(LAYER_NORM_EPS)) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, x · Φ(x) = x/2 · (1 + erf(x/√2)), with `_erf`."""
    y = _erf(x * np.float32(1.0 / np.sqrt(2.0)))
    y += np.float32(1.0)
    y *= x
    y *= np.float32(0.5)
    return y


_ERF_P = np.float32(0.3275911)
_ERF_A = tuple(np.float32(a) for a in (1.061405429, -1.453152027, 1.421413741, -0.284496736,
                                       0.254829592))


def _erf(z: np.ndarray) -> np.ndarray:
    """The error function to within 1.5e-7 (Abramowitz and Stegun 7.1.26), in float32 NumPy:
    as close as float32 holds it, without SciPy (whose import alone costs a process 25 MB)."""
    a = np.abs(z)
    t = a * _ERF_P
    t += np.float32(1.0)
    np.reciprocal(t, out=t)
    poly = t * _ERF_A[0]
    for coefficient in _ERF_A[1:]:
        poly += coefficient
        poly *= t
    a *= a
    np.negative(a, out=a)
    np.exp(a, out=a)
    poly *= a
    np.subtract(np.float32(1.0), poly, out=poly)
    return np.copysign(poly, z, out=poly)
