"""Group commit: many small writes from many coroutines become few transactions.

`stage(batch)` queues writes and returns a future that resolves once they are committed. One
flush at a time takes everything staged so far, in order, and commits it in one transaction.
If a flush fails, writes that create tasks are failed back to their submitters (they were never
acknowledged, and the atomic transaction stored none of them); every other write is kept and
retried with backoff until the database takes it, so no lifecycle step is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from storage.errors import StorageError
from storage.messages import Task, TaskEvent
from storage.task_store import TaskStore, WriteBatch

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (0.05, 0.2, 1.0, 2.0, 5.0)


class StoreWriter:
    """`on_commit`, when given, receives the events of each committed flush (with their ids),
    in commit order, before anyone waiting on those writes is woken; `on_flushed`, when set,
    receives each committed flush's merged batch (the webhook outbox is told through it)."""

    def __init__(self, store: TaskStore, max_batch: int,
                 on_commit: Callable[[list[TaskEvent]], None] | None = None) -> None:
        self.store = store
        self.max_batch = max_batch
        self.on_commit = on_commit
        self.on_flushed: Callable[[WriteBatch], None] | None = None
        self._staged: list[tuple[WriteBatch, asyncio.Future]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._linger: asyncio.TimerHandle | None = None
        self.flushes = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="store-writer")

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Commit what is staged (waiting at most `timeout_s`), then stop."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while (self._staged and self._task and not self._task.done()
               and asyncio.get_running_loop().time() < deadline):
            await asyncio.sleep(0.01)
        if self._task:
            self._task.cancel()

    def stage(self, batch: WriteBatch, linger_s: float = 0.0) -> asyncio.Future:
        """Queue `batch` for the next flush; the future resolves once it is committed. With
        `linger_s`, the batch does not start a flush of its own before that many seconds: it
        rides along with the next write that does (a task's "started" records wait for its
        outcome when the attempt is quick, so a short task costs one commit, not two)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._staged.append((batch, future))
        if linger_s <= 0:
            self._wakeup.set()
        elif self._linger is None:
            self._linger = loop.call_later(linger_s, self._linger_ended)
        return future

    def _linger_ended(self) -> None:
        self._linger = None
        self._wakeup.set()

    async def write(self, batch: WriteBatch) -> dict[str, Task]:
        """Stage `batch` and wait until it is committed. Returns the tasks its flush read back
        (`WriteBatch.read_back`), by id."""
        found: dict[str, Task] = await self.stage(batch)
        return found

    @property
    def backlog(self) -> int:
        return len(self._staged)

    async def _run(self) -> None:
        failures = 0
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._linger is not None:  # what lingered leaves with this flush
                self._linger.cancel()
                self._linger = None
            while self._staged:
                taken, size = 0, 0
                while taken < len(self._staged) and size < self.max_batch:
                    size += len(self._staged[taken][0])
                    taken += 1
                entries = self._staged[:taken]
                merged = WriteBatch()
                for batch, _ in entries:
                    merged.extend(batch)
                try:
                    events = await self.store.apply(merged, events=self.on_commit is not None)
                except StorageError as exc:
                    failures += 1
                    self._fail_submissions(entries, exc)
                    delay = RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S)) - 1]
                    log.error("storage write failed (%s); retrying in %.2fs", exc, delay)
                    await asyncio.sleep(delay)
                    continue
                failures = 0
                self.flushes += 1
                del self._staged[:taken]
                if self.on_commit is not None and events:
                    try:
                        self.on_commit(events)
                    except Exception:
                        log.exception("publishing %d committed events failed", len(events))
                if self.on_flushed is not None:
                    try:
                        self.on_flushed(merged)
                    except Exception:
                        log.exception("telling of a committed flush failed")
                for _, future in entries:
                    if not future.done():
                        future.set_result(merged.found)

    def _fail_submissions(self, entries, exc: StorageError) -> None:
        """Drop staged batches that create tasks, failing their futures; keep the rest."""
        failed = {id(future) for batch, future in entries if batch.new_tasks}
        for _, future in entries:
            if id(future) in failed and not future.done():
                future.set_exception(exc)
        self._staged = [(b, f) for b, f in self._staged if id(f) not in failed]
