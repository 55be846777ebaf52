"""Staged knowledge uploads and collection signatures: all-or-nothing staging, parts kept per
tenant, incomplete uploads refused, old uploads purged, migration 0014 up and down, and a
signature that changes with every write."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from storage.database import migrate_async
from storage.errors import InvalidRequest
from storage.knowledge_store import KnowledgeStore, NewChunk, NewDocument
from storage.knowledge_uploads import KnowledgeUploads, split_parts
from storage.messages import utcnow


@pytest.fixture
async def stores(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'uploads.db'}"
    await migrate_async(url)
    async with await KnowledgeStore.open(url) as store:
        yield store, KnowledgeUploads(store.engine)


async def test_a_staged_upload_reads_back_whole_only_for_its_tenant(stores) -> None:
    _, uploads = stores
    data = bytes(range(256)) * 100
    parts = split_parts(data, 1000)
    assert await uploads.stage("acme", "u1", parts) == len(parts)
    assert await uploads.read("acme", "u1", len(parts), max_bytes=len(data)) == data
    with pytest.raises(InvalidRequest, match="incomplete"):
        await uploads.read("globex", "u1", len(parts), max_bytes=len(data))
    with pytest.raises(InvalidRequest, match="limit"):
        await uploads.read("acme", "u1", len(parts), max_bytes=len(data) - 1)
    assert await uploads.discard("globex", "u1") == 0
    assert await uploads.discard("acme", "u1") == len(parts)


async def test_a_missing_part_is_named_and_a_retried_part_replaces_itself(stores) -> None:
    _, uploads = stores
    await uploads.stage_part("acme", "u2", 0, b"first ")
    await uploads.stage_part("acme", "u2", 2, b"third")
    with pytest.raises(InvalidRequest, match="part 1 of 3 is missing"):
        await uploads.read("acme", "u2", 3, max_bytes=100)
    await uploads.stage_part("acme", "u2", 1, b"second? ")
    await uploads.stage_part("acme", "u2", 1, b"second ")
    assert await uploads.read("acme", "u2", 3, max_bytes=100) == b"first second third"
    with pytest.raises(InvalidRequest, match="upload_id"):
        await uploads.stage_part("acme", "bad id!", 0, b"x")


async def test_old_uploads_are_purged_per_tenant(stores) -> None:
    _, uploads = stores
    await uploads.stage("acme", "old", [b"a"])
    await uploads.stage("globex", "old", [b"b"])
    assert await uploads.purge_before("acme", utcnow() + timedelta(seconds=1)) == 1
    assert await uploads.read("globex", "old", 1, max_bytes=10) == b"b"


async def test_the_signature_changes_with_every_write(stores) -> None:
    store, uploads = stores

    async def put(name: str, chunks: int) -> None:
        await store.put_document("acme", "c", NewDocument(name, "text/plain", "0" * 64, 1), [
            NewChunk(f"text {i}", 0, 1, b"\x00\x00\x80\x3f") for i in range(chunks)])

    seen = [await uploads.content_signature("acme", "c")]
    await put("a.txt", 2)
    seen.append(await uploads.content_signature("acme", "c"))
    await put("b.txt", 2)
    seen.append(await uploads.content_signature("acme", "c"))
    await put("a.txt", 2)  # replaced with as many chunks
    seen.append(await uploads.content_signature("acme", "c"))
    document = next(d for d in await store.all_documents("acme", "c") if d.name == "b.txt")
    await store.delete_document("acme", "c", document.id)
    seen.append(await uploads.content_signature("acme", "c"))
    assert seen[0] == (0, 0) and len(set(seen)) == len(seen)
    assert await uploads.content_signature("globex", "c") == (0, 0)


async def test_0014_adds_the_uploads_table_and_goes_down_again(empty_database_url: str) -> None:
    import asyncio

    from alembic import command
    from sqlalchemy import inspect

    from storage.database import _alembic_config, async_url, create_engine

    async def tables() -> set[str]:
        engine = create_engine(empty_database_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(
                    lambda sync: set(inspect(sync).get_table_names()))
        finally:
            await engine.dispose()

    config = _alembic_config(async_url(empty_database_url))
    await asyncio.to_thread(command.upgrade, config, "0013")
    before = await tables()
    await asyncio.to_thread(command.upgrade, config, "0014")
    assert await tables() == before | {"knowledge_uploads"}
    await asyncio.to_thread(command.downgrade, config, "0013")
    assert await tables() == before
