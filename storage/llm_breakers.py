"""Where the circuit breakers of model deployments keep their state, so that it outlives a
gateway restart and every gateway replica sees the same breaker.

A breaker's whole state is one small `BreakerRecord` per deployment. Stores offer two
operations, and every change goes through the second:

    get(deployment)                                  the record, or None (never failed: closed)
    compare_and_set(deployment, expected_version, record)
        store `record` only if the stored version is still `expected_version` (0: no record
        yet); True when stored. Concurrent writers of the same version: exactly one wins.

`SqlBreakerStore` keeps the records in the platform's database (table `llm_breakers`; a
compare-and-set is one conditional UPDATE, or one INSERT that a second writer's primary key
refuses). `RedisBreakerStore` keeps each record as one JSON string under
`ymera:<namespace>:llm:breaker:<deployment>` and compares-and-sets in one Lua script.
Both raise `StorageError` when their backend fails; the logic that reads the records lives in
`ml.llm.resilience`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import select, update

from storage import redis_keys
from storage.database import EngineStore
from storage.errors import Conflict, InvalidRequest, StorageError
from storage.messages import utcnow
from storage.models import llm_breakers_table

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
STATES = (CLOSED, OPEN, HALF_OPEN)
CONNECT_TIMEOUT_S = 2.0
COMMAND_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class BreakerRecord:
    """One deployment's breaker. `failures` counts the failures of the window that started at
    `window_started_at`; `opened_at` is when it last opened; `probe_until` is when the one
    probe let through while half-open stops holding its slot. Times are epoch seconds."""

    state: str = CLOSED
    failures: int = 0
    window_started_at: float = 0.0
    opened_at: float | None = None
    probe_until: float | None = None
    version: int = 0

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise InvalidRequest(f"breaker state {self.state!r} is not one of {STATES}",
                                 {"state": self.state})


def _check_deployment(deployment: str) -> str:
    if not deployment or len(deployment) > 128:
        raise InvalidRequest(
            f"deployment name {deployment!r} must be 1 to 128 characters",
            {"deployment": deployment})
    return deployment


class SqlBreakerStore(EngineStore):
    """Breaker records in the `llm_breakers` table."""

    async def get(self, deployment: str) -> BreakerRecord | None:
        c = llm_breakers_table.c
        rows = await self._fetch(
            select(c.state, c.failures, c.window_started_at, c.opened_at, c.probe_until,
                   c.version).where(c.deployment == _check_deployment(deployment)))
        return BreakerRecord(**rows[0]._asdict()) if rows else None

    async def compare_and_set(self, deployment: str, expected_version: int,
                              record: BreakerRecord) -> bool:
        _check_deployment(deployment)
        values: dict[str, Any] = {**asdict(record), "updated_at": utcnow()}
        table = llm_breakers_table
        try:
            async with self._transaction("storing a circuit breaker",
                                         conflict=Conflict("breaker created concurrently")
                                         ) as connection:
                if expected_version == 0:  # a second writer's insert hits the primary key
                    await connection.execute(table.insert().values(deployment=deployment,
                                                                   **values))
                    return True
                result = await connection.execute(
                    update(table).where(table.c.deployment == deployment,
                                        table.c.version == expected_version).values(**values))
                return result.rowcount == 1
        except Conflict:
            return False


# KEYS[1]: the record's key. ARGV: the expected version, the new record (JSON).
COMPARE_AND_SET_SCRIPT = """
local current = redis.call('GET', KEYS[1])
local version = 0
if current then version = cjson.decode(current)['version'] end
if version ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


def breaker_key(namespace: str, deployment: str) -> str:
    """The Redis key of one deployment's breaker record."""
    return redis_keys.llm_breaker_key(namespace, _check_deployment(deployment))


class RedisBreakerStore:
    """Breaker records in Redis under `namespace`, shared by every replica using the same ones."""

    def __init__(self, url: str, namespace: str) -> None:
        redis_keys.namespace_prefix(namespace)  # reject a bad namespace now, not per call
        parts = urlsplit(url)
        self.address = f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
        self.namespace = namespace
        self._client = Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                      socket_timeout=COMMAND_TIMEOUT_S)
        self._script = self._client.register_script(COMPARE_AND_SET_SCRIPT)

    async def get(self, deployment: str) -> BreakerRecord | None:
        try:
            stored = await self._client.get(breaker_key(self.namespace, deployment))
        except (RedisError, OSError) as exc:
            raise self._unreachable(exc) from exc
        return None if stored is None else BreakerRecord(**json.loads(stored))

    async def compare_and_set(self, deployment: str, expected_version: int,
                              record: BreakerRecord) -> bool:
        key = breaker_key(self.namespace, deployment)
        try:
            stored = await self._script(keys=[key],
                                        args=[expected_version, json.dumps(asdict(record))])
        except (RedisError, OSError) as exc:
            raise self._unreachable(exc) from exc
        return bool(int(stored))

    def _unreachable(self, exc: BaseException) -> StorageError:
        return StorageError(f"circuit breakers could not reach Redis at {self.address}: {exc}",
                            {"address": self.address})

    async def close(self) -> None:
        await self._client.aclose()
