"""The routing examples the router learned: from tasks that succeeded on a confident route
(`learned`) and from users saying where a task should have gone (`feedback`).

The router rebuilds its index from these when it (re)starts, so what it learned survives
restarts. Examples are kept in insertion order; `prune` bounds how many one agent type keeps
from one source, dropping the oldest first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, insert, select

from storage.database import EngineStore
from storage.errors import InvalidRequest
from storage.models import routing_examples_table
from storage.messages import as_utc, utcnow

STORED_SOURCES = ("learned", "feedback")
MAX_TEXT_CHARS = 10_000


@dataclasses.dataclass(frozen=True)
class StoredExample:
    """One routing example as kept: `id` orders examples by when they were added."""

    id: int
    agent_type: str
    text: str
    source: str
    created_at: datetime
    task_id: str | None = None


@dataclasses.dataclass(frozen=True)
class NewExample:
    agent_type: str
    text: str
    source: str = "learned"
    task_id: str | None = None


def _check(example: NewExample) -> None:
    if example.source not in STORED_SOURCES:
        raise InvalidRequest(f"a stored example's source must be one of "
                             f"{', '.join(STORED_SOURCES)}, not {example.source!r}",
                             {"source": example.source})
    if not isinstance(example.agent_type, str) or not 1 <= len(example.agent_type) <= 64:
        raise InvalidRequest("an example's agent_type must be 1 to 64 characters",
                             {"agent_type": example.agent_type})
    if not isinstance(example.text, str) or not example.text.strip():
        raise InvalidRequest("an example needs some text")
    if len(example.text) > MAX_TEXT_CHARS:
        raise InvalidRequest(f"an example is {len(example.text)} characters; at most "
                             f"{MAX_TEXT_CHARS}", {"length": len(example.text)})


def _from_row(row) -> StoredExample:
    return StoredExample(row.id, row.agent_type, row.text, row.source, as_utc(row.created_at),
                         row.task_id)


class ExampleStore(EngineStore):
    """Async access to the stored routing examples over one engine."""

    async def add(self, examples: Sequence[NewExample]) -> list[StoredExample]:
        """Store `examples` in one transaction; all or none. Returns them with their ids."""
        for example in examples:
            _check(example)
        if not examples:
            return []
        now = utcnow()
        table = routing_examples_table
        stored = []
        async with self._transaction("storing routing examples") as connection:
            for example in examples:
                result = await connection.execute(
                    insert(table).values(agent_type=example.agent_type, text=example.text,
                                         source=example.source, task_id=example.task_id,
                                         created_at=now).returning(table.c.id))
                stored.append(StoredExample(int(result.scalar_one()), example.agent_type,
                                            example.text, example.source, now,
                                            example.task_id))
        return stored

    async def all(self) -> list[StoredExample]:
        """Every stored example, oldest first."""
        table = routing_examples_table
        rows = await self._fetch(select(table).order_by(table.c.id))
        return [_from_row(row) for row in rows]

    async def delete(self, ids: Sequence[int]) -> int:
        """Remove the examples with these ids; returns how many there were."""
        if not ids:
            return 0
        table = routing_examples_table
        async with self._transaction("removing routing examples") as connection:
            result = await connection.execute(delete(table).where(table.c.id.in_(list(ids))))
        return int(result.rowcount or 0)

    async def prune(self, agent_type: str, source: str, keep: int) -> list[int]:
        """Keep only the newest `keep` examples of `agent_type` from `source`; returns the ids
        of those removed."""
        if keep < 0:
            raise InvalidRequest("keep must be >= 0")
        table = routing_examples_table
        rows = await self._fetch(
            select(table.c.id)
            .where(table.c.agent_type == agent_type, table.c.source == source)
            .order_by(table.c.id.desc())
            .offset(keep))
        ids = [int(row.id) for row in rows]
        await self.delete(ids)
        return ids
