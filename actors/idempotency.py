"""Which idempotency keys already name a task: lookups that arrive together share one query.

Every submission with a key (the API gives each request one) must ask storage whether the key
was seen before: the one case it was is a retried call, after an orchestrator restart took the
first answer with it. Asked one by one, that is a query per submission; here, the lookups
that arrive while a query runs wait for the next, which answers all of them at once.

Guarantees: each caller gets exactly the keys it asked about that storage holds, by
(tenant, key); a failed query fails the lookups it was answering, and only those; a caller that
stops waiting (cancelled) changes nothing for the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from storage.task_store import TaskStore

Key = tuple[str, str]  # (tenant, idempotency key)


class IdempotencyLookup:
    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self.queries = 0
        self._waiting: list[tuple[set[Key], asyncio.Future]] = []
        self._drainer: asyncio.Task | None = None

    async def find(self, keys: Collection[Key]) -> dict[Key, str]:
        """The id of the task each of `keys` names, for the keys that name one."""
        if not keys:
            return {}
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((set(keys), future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="idempotency-lookup")
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            wanted = set().union(*(keys for keys, _ in batch))
            try:
                self.queries += 1
                found = await self.store.task_ids_by_idempotency_keys(wanted)
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for keys, future in batch:
                if not future.done():
                    future.set_result({key: found[key] for key in keys if key in found})
