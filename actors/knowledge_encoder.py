"""Encoding for the `knowledge` agent's concurrent tasks in shared batches.

A replica runs several tasks at once (ingests of many small documents, searches). Encoding
each task's texts on its own leaves the model running small batches, which on a CPU cost
several times more per text than large ones. `BatchingEncoder.encode` queues a task's texts;
the queue is encoded as one batch (in a worker thread, off the event loop) once nothing more
arrived for `window_s` or it holds `max_batch` texts, and while a batch runs the next one
gathers. Guarantees: each caller gets exactly its own rows, in its order; a failure of the
model fails every caller of that batch with it, and the next batch starts afresh.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

DEFAULT_WINDOW_S = 0.005
DEFAULT_MAX_BATCH = 256


class BatchingEncoder:
    """Shared batches over `encode(texts) -> rows` (see the module)."""

    def __init__(self, encode: Callable[[Sequence[str]], Any], *,
                 window_s: float = DEFAULT_WINDOW_S, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self._encode = encode
        self.window_s = window_s
        self.max_batch = max_batch
        self._queue: list[tuple[list[str], asyncio.Future[np.ndarray]]] = []
        self._queued = 0
        self._worker: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()

    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.append((list(texts), future))
        self._queued += len(texts)
        self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._queue:
            while self._queued < self.max_batch:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), self.window_s)
                except asyncio.TimeoutError:
                    break
            batch, self._queue, self._queued = self._queue, [], 0
            texts = [text for wanted, _ in batch for text in wanted]
            try:
                rows = np.asarray(await asyncio.to_thread(self._encode, texts),
                                  dtype=np.float32)
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for wanted, future in batch:
                if not future.done():
                    future.set_result(rows[start:start + len(wanted)])
                start += len(wanted)
