"""The real Redis that tests use, and a fresh namespace on it for each test.

Redis is found at `YMERA_TEST_REDIS_URL`. When it cannot be reached the test is skipped with the
reason, or fails under `CI=true` (see `tests.support.databases.require_service`). Each test gets
its own namespace, so tests never see each other's keys or channels, and the namespace's keys
are deleted afterwards:

    @pytest.fixture
    async def namespace() -> AsyncIterator[str]:
        async with redis_namespace() as name:
            yield name
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import AsyncIterator

import redis
from redis.asyncio import Redis

from storage import redis_keys
from tests.support.databases import CONNECT_TIMEOUT_S, require_service

REDIS_URL = os.environ.get("YMERA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_NAMESPACE_PREFIX = "test-"


@functools.lru_cache(maxsize=1)
def _redis_problem() -> str | None:
    """Why Redis cannot be used, or None. Asked once per session."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                  socket_timeout=CONNECT_TIMEOUT_S)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def redis_reachable() -> bool:
    return _redis_problem() is None


def require_redis() -> None:
    """Skip the calling test when Redis is unreachable, or fail it under `CI=true`."""
    require_service(
        "Redis", redis_reachable(),
        f"Redis is not reachable at {REDIS_URL} ({_redis_problem()}). Start it (for example "
        "`redis-server --daemonize yes`, or `docker run -d -p 6379:6379 redis:7`) or point "
        "YMERA_TEST_REDIS_URL at one.")


async def delete_namespace(namespace: str) -> int:
    """Delete every key under `namespace`; returns how many there were."""
    client = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(
            match=redis_keys.namespace_pattern(namespace), count=500)]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start:start + 500])
        return len(keys)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def redis_namespace() -> AsyncIterator[str]:
    """A namespace no other test uses (after `require_redis`), emptied when the block exits."""
    require_redis()
    namespace = f"{TEST_NAMESPACE_PREFIX}{uuid.uuid4().hex[:12]}"
    try:
        yield namespace
    finally:
        await delete_namespace(namespace)
