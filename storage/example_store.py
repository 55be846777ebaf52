"""The routing examples the router learned: from tasks that succeeded on a confident route
(`learned`) and from users saying where a task should have gone (`feedback`).

Every example belongs to one tenant, and every read, delete and prune names the tenant: no
call here returns, removes or counts another tenant's examples. The router rebuilds a tenant's
index from these when it first needs it, so what it learned survives restarts. Examples are
kept in insertion order; `prune` bounds how many one agent type keeps from one source for one
tenant, dropping the oldest first.
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
MAX_TENANT_CHARS = 64


@dataclasses.dataclass(frozen=True)
class StoredExample:
    """One routing example as kept: `id` orders examples by when they were added."""

    id: int
    agent_type: str
    text: str
    source: str
    created_at: datetime
    task_id: str | None = None
    tenant: str = "default"


@dataclasses.dataclass(frozen=True)
class NewExample:
    agent_type: str
    text: str
    source: str = "learned"
    task_id: str | None = None
    tenant: str = "default"


def check_tenant(tenant: object) -> str:
    """`tenant` if it can own routing examples; `InvalidRequest` naming the field otherwise."""
    if not isinstance(tenant, str) or not 1 <= len(tenant) <= MAX_TENANT_CHARS:
        raise InvalidRequest(f"tenant must be a string of 1 to {MAX_TENANT_CHARS} characters",
                             {"field": "tenant"})
    return tenant


def _check(example: NewExample) -> None:
    check_tenant(example.tenant)
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
                         row.task_id, row.tenant)


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
                    insert(table).values(tenant=example.tenant, agent_type=example.agent_type,
                                         text=example.text, source=example.source,
                                         task_id=example.task_id,
                                         created_at=now).returning(table.c.id))
                stored.append(StoredExample(int(result.scalar_one()), example.agent_type,
                                            example.text, example.source, now,
                                            example.task_id, example.tenant))
        return stored

    async def all(self, tenant: str) -> list[StoredExample]:
        """Every example stored for `tenant`, oldest first."""
        return (await self.by_tenant([tenant]))[tenant]

    async def by_tenant(self, tenants: Sequence[str]) -> dict[str, list[StoredExample]]:
        """Every example stored for each of `tenants` (in one query), oldest first; a tenant
        with none maps to an empty list."""
        wanted = list(dict.fromkeys(check_tenant(tenant) for tenant in tenants))
        found: dict[str, list[StoredExample]] = {tenant: [] for tenant in wanted}
        if not wanted:
            return found
        table = routing_examples_table
        rows = await self._fetch(select(table).where(table.c.tenant.in_(wanted))
                                 .order_by(table.c.id))
        for row in rows:
            found[row.tenant].append(_from_row(row))
        return found

    async def delete(self, tenant: str, ids: Sequence[int]) -> int:
        """Remove `tenant`'s examples with these ids (another tenant's stay); returns how many
        there were."""
        check_tenant(tenant)
        if not ids:
            return 0
        table = routing_examples_table
        async with self._transaction("removing routing examples") as connection:
            result = await connection.execute(
                delete(table).where(table.c.tenant == tenant, table.c.id.in_(list(ids))))
        return int(result.rowcount or 0)

    async def prune(self, tenant: str, agent_type: str, source: str, keep: int) -> list[int]:
        """Keep only `tenant`'s newest `keep` examples of `agent_type` from `source`; returns
        the ids of those removed."""
        check_tenant(tenant)
        if keep < 0:
            raise InvalidRequest("keep must be >= 0", {"field": "keep"})
        table = routing_examples_table
        rows = await self._fetch(
            select(table.c.id)
            .where(table.c.tenant == tenant, table.c.agent_type == agent_type,
                   table.c.source == source)
            .order_by(table.c.id.desc())
            .offset(keep))
        ids = [int(row.id) for row in rows]
        await self.delete(tenant, ids)
        return ids
