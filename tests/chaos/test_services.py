"""The private services survive what the harness does to them: PostgreSQL keeps committed rows
across a SIGKILL and restart, Redis comes back empty and answering, and both are reached
through a fault proxy."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg
import pytest
import redis

from cluster.chaos.proxy import FaultProxy
from cluster.chaos.services import PrivatePostgres, PrivateRedis, ServiceUnavailable


def _require(make):
    try:
        return make()
    except ServiceUnavailable as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(exc))


def test_postgres_keeps_committed_rows_across_a_kill(tmp_path: Path) -> None:
    server = _require(lambda: PrivatePostgres.create())
    proxy = None
    try:
        server.start()
        proxy = FaultProxy("127.0.0.1", server.port).start()
        url = server.url_at(proxy.port)

        async def write() -> None:
            conn = await asyncpg.connect(url)
            await conn.execute("create table kept (n int); insert into kept values (7)")
            await conn.close()

        async def read() -> int:
            conn = await asyncpg.connect(url)
            try:
                return int(await conn.fetchval("select sum(n) from kept"))
            finally:
                await conn.close()

        asyncio.run(write())
        old_pid = server.pid()
        server.restart()
        assert server.pid() not in (None, old_pid)
        assert asyncio.run(read()) == 7
    finally:
        if proxy is not None:
            proxy.close()
        server.remove()


def test_redis_restarts_empty_and_answers(tmp_path: Path) -> None:
    server = _require(lambda: PrivateRedis(tmp_path / "redis"))
    try:
        server.start()
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        server.restart()
        client = redis.Redis.from_url(server.url)
        assert client.get("k") is None
        assert client.ping()
    finally:
        server.stop()
