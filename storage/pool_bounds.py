"""The replica bounds operators set for agent pools (`ymera scale`), so that a pin or a
changed range outlives the orchestrator that applied it. A stored row replaces the configured
bounds of its agent type until it is removed; rows of agent types no longer registered are
kept (the type may come back) and ignored.
"""

from __future__ import annotations

from sqlalchemy import delete, insert, select

from storage.database import EngineStore
from storage.messages import utcnow
from storage.models import pool_bounds_table


class PoolBoundsStore(EngineStore):
    """Async access to the stored pool bounds. It may share the engine of another store (the
    orchestrator's task store): closing that store closes this one."""

    async def all(self) -> dict[str, tuple[int, int]]:
        """(min_replicas, max_replicas) by agent type."""
        table = pool_bounds_table
        rows = await self._fetch(select(table.c.agent_type, table.c.min_replicas,
                                        table.c.max_replicas))
        return {row.agent_type: (row.min_replicas, row.max_replicas) for row in rows}

    async def put(self, agent_type: str, min_replicas: int, max_replicas: int) -> None:
        """Keep these bounds for `agent_type`, replacing any it had."""
        table = pool_bounds_table
        async with self._transaction("storing pool bounds") as connection:
            await connection.execute(delete(table).where(table.c.agent_type == agent_type))
            await connection.execute(insert(table).values(
                agent_type=agent_type, min_replicas=min_replicas, max_replicas=max_replicas,
                updated_at=utcnow()))

    async def remove(self, agent_type: str) -> bool:
        """Forget the bounds of `agent_type`; whether it had any."""
        table = pool_bounds_table
        async with self._transaction("removing pool bounds") as connection:
            result = await connection.execute(
                delete(table).where(table.c.agent_type == agent_type))
        return bool(result.rowcount)
