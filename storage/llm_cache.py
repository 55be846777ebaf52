"""Exact-match cache of model answers, per tenant, each entry kept for its own TTL.

An entry is found only by the same tenant asking the same model group the same messages with
the same parameters: `cache_key` hashes all four (SHA-256 of their canonical JSON), and every
lookup is also filtered by tenant, so one tenant's entry never answers another, even if two
keys ever collided. An expired entry is never served.

Entries live in the `llm_cache` table, shared by every gateway and kept across restarts, with
an in-process LRU front of `memory_entries` entries that answers repeated questions without a
database read. Entries are immutable (a key always means the same request), so the front can
only be stale about entries removed by `clear` in another process; it honours every TTL.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.database import EngineStore
from storage.errors import InvalidRequest
from storage.messages import as_utc, utcnow
from storage.models import llm_cache_table

DEFAULT_MEMORY_ENTRIES = 1024


def cache_key(tenant: str, model_group: str, messages: Iterable[tuple[str, str]],
              params: Mapping[str, Any]) -> str:
    """The key of one request: a hex SHA-256 of the tenant, the model group, the (role,
    content) messages in order and the parameters (by name; they must be JSON values)."""
    _check_tenant(tenant)
    try:
        canonical = json.dumps(
            [tenant, model_group, [[role, content] for role, content in messages], params],
            sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"a cached request's parameters must be JSON values: {exc}") from exc
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_tenant(tenant: str) -> str:
    if not tenant or len(tenant) > 64:
        raise InvalidRequest(f"tenant {tenant!r} must be 1 to 64 characters", {"tenant": tenant})
    return tenant


class LlmResponseCache(EngineStore):
    """The cache over one database. `clock` gives the current time (UTC)."""

    clock: Callable[[], datetime] = staticmethod(utcnow)

    def __init__(self, engine: AsyncEngine, memory_entries: int = DEFAULT_MEMORY_ENTRIES) -> None:
        super().__init__(engine)
        if memory_entries < 0:
            raise InvalidRequest(f"memory_entries must not be negative, not {memory_entries}",
                                 {"memory_entries": memory_entries})
        self.memory_entries = memory_entries
        # (tenant, key) -> (expires_at, the value as JSON: callers get copies, never the entry)
        self._memory: OrderedDict[tuple[str, str], tuple[datetime, str]] = OrderedDict()

    async def get(self, tenant: str, key: str) -> Any | None:
        """The answer cached for `tenant` under `key`, or None (never cached, or expired)."""
        now = self.clock()
        remembered = self._memory.get((_check_tenant(tenant), key))
        if remembered is not None:
            expires, text = remembered
            if expires > now:
                self._memory.move_to_end((tenant, key))
                return json.loads(text)
            del self._memory[(tenant, key)]
        c = llm_cache_table.c
        rows = await self._fetch(select(c.value, c.expires_at).where(
            c.tenant == tenant, c.key == key, c.expires_at > now))
        if not rows:
            return None
        self._remember(tenant, key, as_utc(rows[0].expires_at), rows[0].value)
        return rows[0].value

    async def put(self, tenant: str, key: str, value: Any, ttl_s: float) -> None:
        """Cache `value` (a JSON value) for `tenant` under `key` for `ttl_s` seconds,
        replacing what was there."""
        _check_tenant(tenant)
        if not ttl_s > 0:
            raise InvalidRequest(f"a cache entry's ttl_s must be positive, not {ttl_s}",
                                 {"ttl_s": ttl_s})
        if value is None:
            raise InvalidRequest("None cannot be cached: it means a miss")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"a cached answer must be a JSON value: {exc}") from exc
        now = self.clock()
        expires = now + timedelta(seconds=ttl_s)
        row = {"tenant": tenant, "key": key, "value": value, "created_at": now,
               "expires_at": expires}
        if self.engine.dialect.name == "postgresql":
            statement: Any = postgresql_insert(llm_cache_table).values(**row)
        else:
            statement = sqlite_insert(llm_cache_table).values(**row)
        statement = statement.on_conflict_do_update(
            index_elements=["tenant", "key"],
            set_={"value": statement.excluded.value, "created_at": now, "expires_at": expires})
        async with self._transaction("caching a model answer") as connection:
            await connection.execute(statement)
        self._remember(tenant, key, expires, value)

    async def clear(self, tenant: str) -> int:
        """Forget every entry of `tenant` (in this process's front too); how many were stored."""
        table = llm_cache_table
        async with self._transaction("clearing a tenant's cached answers") as connection:
            result = await connection.execute(
                delete(table).where(table.c.tenant == _check_tenant(tenant)))
        for remembered in [k for k in self._memory if k[0] == tenant]:
            del self._memory[remembered]
        return int(result.rowcount)

    async def purge_expired(self) -> int:
        """Delete every expired entry; how many there were."""
        table = llm_cache_table
        async with self._transaction("purging expired cached answers") as connection:
            result = await connection.execute(delete(table).where(
                table.c.expires_at <= self.clock()))
        return int(result.rowcount)

    def _remember(self, tenant: str, key: str, expires: datetime, value: Any) -> None:
        if not self.memory_entries:
            return
        self._memory[(tenant, key)] = (expires, json.dumps(value))
        self._memory.move_to_end((tenant, key))
        while len(self._memory) > self.memory_entries:
            self._memory.popitem(last=False)
