"""The knowledge agent's shared encoding batches: concurrent callers share one model call and
each gets exactly its own rows; a model failure fails that batch's callers, not the next."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from actors.knowledge_encoder import BatchingEncoder


class Model:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.fail = False

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if self.fail:
            raise RuntimeError("model out of memory")
        return np.asarray([[float(len(text)), float(ord(text[0]))] for text in texts])


async def test_concurrent_callers_share_a_batch_and_get_their_own_rows() -> None:
    model = Model()
    encoder = BatchingEncoder(model.encode, window_s=0.02)
    asked = [["a", "bb"], ["ccc"], ["dddd", "e", "ff"]]
    rows = await asyncio.gather(*(encoder.encode(texts) for texts in asked))
    assert len(model.calls) == 1 and sorted(model.calls[0]) == sorted(sum(asked, []))
    for texts, got in zip(asked, rows):
        assert got.tolist() == [[float(len(t)), float(ord(t[0]))] for t in texts]


async def test_a_failed_batch_fails_its_callers_and_the_next_batch_works() -> None:
    model = Model()
    encoder = BatchingEncoder(model.encode, window_s=0.01)
    model.fail = True
    with pytest.raises(RuntimeError, match="out of memory"):
        await asyncio.gather(encoder.encode(["x"]), encoder.encode(["y"]))
    model.fail = False
    assert (await encoder.encode(["zz"])).tolist() == [[2.0, float(ord("z"))]]
