"""What the knowledge agent needs from storage besides `storage.knowledge_store`: documents'
raw bytes staged for ingestion, and a collection's content signature.

Staged uploads. A document larger than a task payload reaches the `knowledge` agent through
this table: the API (or the client, one part per task) stores its bytes in numbered parts under
an upload id, and only then is the ingest task that names the upload submitted; the agent reads
the parts, ingests the document and deletes them. Guarantees:
- every read, write and delete names the tenant: a tenant can never read, complete or discard
  another tenant's upload, even knowing its id;
- `stage` writes all the parts of an upload in one transaction (all or nothing); `stage_part`
  writes one part, replacing a part of the same number (a retried part is harmless);
- `read` gives the parts 0..n-1 joined in order, or `InvalidRequest` naming the first missing
  part; it never returns a partial document;
- `purge_before` drops the uploads (of a tenant) staged before a time: uploads whose ingest
  task was never submitted do not stay forever.

Content signature. `content_signature(tenant, collection)` is (number of chunks, sum of their
ids). Chunk ids are never reused and every write adds chunks whose ids exceed every id stored
before it, so any write that changes a collection's chunks (an added, replaced or deleted
document, a collection deleted and made again) changes the signature: with as many chunks
added as removed, the added ids sum to more. Replicas compare it with the signature of what
they loaded to know whether their index is stale.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, insert, select

from storage.database import EngineStore
from storage.errors import InvalidRequest
from storage.knowledge_store import MAX_TENANT_CHARS, check_name
from storage.messages import utcnow
from storage.models import knowledge_chunks_table, knowledge_uploads_table

MAX_UPLOAD_ID_CHARS = 64
MAX_PARTS = 10_000
Signature = tuple[int, int]


def check_upload(tenant: str, upload_id: str) -> None:
    check_name(tenant, "tenant", MAX_TENANT_CHARS)
    check_name(upload_id, "upload_id", MAX_UPLOAD_ID_CHARS)


def split_parts(data: bytes, part_bytes: int) -> list[bytes]:
    """`data` cut into parts of at most `part_bytes` (one empty part for empty data)."""
    if part_bytes < 1:
        raise ValueError("part_bytes must be positive")
    return [data[i:i + part_bytes] for i in range(0, len(data), part_bytes)] or [b""]


class KnowledgeUploads(EngineStore):
    """Staged uploads and collection signatures over one engine (see the module)."""

    async def stage(self, tenant: str, upload_id: str, parts: list[bytes]) -> int:
        """Store every part of an upload in one transaction; how many parts."""
        check_upload(tenant, upload_id)
        if not 1 <= len(parts) <= MAX_PARTS:
            raise InvalidRequest(f"an upload has 1 to {MAX_PARTS} parts, not {len(parts)}",
                                 {"field": "parts"})
        table, now = knowledge_uploads_table, utcnow()
        async with self._transaction("staging an upload") as connection:
            await connection.execute(delete(table).where(
                table.c.tenant == tenant, table.c.upload_id == upload_id))
            for number, data in enumerate(parts):
                await connection.execute(insert(table).values(
                    tenant=tenant, upload_id=upload_id, part=number, data=data,
                    created_at=now))
        return len(parts)

    async def stage_part(self, tenant: str, upload_id: str, part: int, data: bytes) -> None:
        """Store (or replace) part `part` of an upload."""
        check_upload(tenant, upload_id)
        if not 0 <= part < MAX_PARTS:
            raise InvalidRequest(f"part must be 0 to {MAX_PARTS - 1}, not {part}",
                                 {"field": "part"})
        table = knowledge_uploads_table
        async with self._transaction("staging an upload part") as connection:
            await connection.execute(delete(table).where(
                table.c.tenant == tenant, table.c.upload_id == upload_id, table.c.part == part))
            await connection.execute(insert(table).values(
                tenant=tenant, upload_id=upload_id, part=part, data=data, created_at=utcnow()))

    async def read(self, tenant: str, upload_id: str, parts: int, max_bytes: int) -> bytes:
        """Parts 0..`parts`-1 of an upload joined; `InvalidRequest` when one is missing, when
        there are more, or when they add up to more than `max_bytes`."""
        check_upload(tenant, upload_id)
        table = knowledge_uploads_table
        rows = await self._fetch(select(table.c.part, table.c.data).where(
            table.c.tenant == tenant, table.c.upload_id == upload_id).order_by(table.c.part))
        numbers = [int(row.part) for row in rows]
        expected = list(range(parts))
        if numbers != expected:
            missing = sorted(set(expected) - set(numbers))
            what = (f"part {missing[0]} of {parts} is missing" if missing
                    else f"it has {len(numbers)} parts, not {parts}")
            raise InvalidRequest(f"upload {upload_id!r} is incomplete: {what}",
                                 {"field": "upload_id", "upload_id": upload_id})
        size = sum(len(row.data) for row in rows)
        if size > max_bytes:
            raise InvalidRequest(f"upload {upload_id!r} is {size} bytes; the limit is "
                                 f"{max_bytes}", {"field": "upload_id", "limit": max_bytes})
        return b"".join(bytes(row.data) for row in rows)

    async def discard(self, tenant: str, upload_id: str) -> int:
        """Delete an upload's parts; how many there were."""
        check_upload(tenant, upload_id)
        table = knowledge_uploads_table
        async with self._transaction("discarding an upload") as connection:
            result = await connection.execute(delete(table).where(
                table.c.tenant == tenant, table.c.upload_id == upload_id))
        return int(result.rowcount or 0)

    async def purge_before(self, tenant: str, before: datetime) -> int:
        """Delete `tenant`'s parts staged before `before`; how many."""
        table = knowledge_uploads_table
        async with self._transaction("purging old uploads") as connection:
            result = await connection.execute(delete(table).where(
                table.c.tenant == tenant, table.c.created_at < before))
        return int(result.rowcount or 0)

    async def content_signature(self, tenant: str, collection: str) -> Signature:
        """(chunks, sum of chunk ids) of a collection; (0, 0) when it has none."""
        table = knowledge_chunks_table
        rows = await self._fetch(select(func.count(), func.coalesce(func.sum(table.c.id), 0))
                                 .where(table.c.tenant == tenant,
                                        table.c.collection == collection))
        return int(rows[0][0]), int(rows[0][1])
