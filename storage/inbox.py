"""Agent inboxes: messages posted to an agent type, kept until the recipient acknowledges them.

An inbox is addressed by tenant and agent type (`recipient`), not by replica, so a message
outlives the replica that was running when it arrived. Every read and ack names its tenant: a
tenant lists and counts only its own messages, and another tenant's message is `NotFound`,
exactly like one that does not exist. Messages are read oldest first; acknowledging one hides
it from the default listing but keeps it, and acknowledging again changes nothing (the first
`acked_at` stands), so a reader that crashes between reading and acking may safely ack again.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update

from storage.cursor import decode_cursor, encode_cursor
from storage.database import EngineStore
from storage.errors import InvalidRequest, NotFound
from storage.messages import InboxMessage, as_utc, new_task_id, utcnow
from storage.models import messages_table
from storage.storable import check_text

MAX_BODY_BYTES = 256 * 1024
MAX_PAGE = 1000
_LENGTHS = {"recipient": 64, "tenant": 64, "sender": 64, "task_id": 32, "subject": 200}


def message_from_row(row: Any) -> InboxMessage:
    return InboxMessage(
        id=row.id, recipient=row.recipient, body=row.body, created_at=as_utc(row.created_at),
        tenant=row.tenant, sender=row.sender, task_id=row.task_id, subject=row.subject,
        acked_at=as_utc(row.acked_at) if row.acked_at is not None else None,
    )


def body_size(body: Any) -> int:
    """The size of `body` as compact UTF-8 JSON; `InvalidRequest` when it is not plain JSON."""
    try:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"message body is not plain JSON: {exc}") from exc
    return len(text.encode())


def _check_fields(body: Any, fields: dict[str, str | None]) -> None:
    if body is None:
        raise InvalidRequest("message body must not be null")
    size = body_size(body)
    if size > MAX_BODY_BYTES:
        raise InvalidRequest(f"message body is {size} bytes; an inbox accepts at most "
                             f"{MAX_BODY_BYTES}", {"size": size, "limit": MAX_BODY_BYTES})
    for name, value in fields.items():
        if value is None and name not in ("recipient", "tenant"):
            continue
        check_text("message", name, value, _LENGTHS[name])


class InboxStore(EngineStore):
    """Async access to the agent inboxes over one engine."""

    async def post(
        self,
        recipient: str,
        body: Any,
        *,
        sender: str | None = None,
        task_id: str | None = None,
        subject: str | None = None,
        tenant: str = "default",
    ) -> InboxMessage:
        """Store `body` (any JSON value but null, at most `MAX_BODY_BYTES`) in `recipient`'s
        inbox. Committed when this returns."""
        _check_fields(body, {"recipient": recipient, "tenant": tenant, "sender": sender,
                             "task_id": task_id, "subject": subject})
        message = InboxMessage(id=new_task_id(), recipient=recipient, body=body,
                               created_at=utcnow(), tenant=tenant, sender=sender,
                               task_id=task_id, subject=subject)
        row = {"id": message.id, "tenant": tenant, "recipient": recipient, "sender": sender,
               "task_id": task_id, "subject": subject, "body": body,
               "created_at": message.created_at, "acked_at": None}
        async with self._transaction(f"posting a message to {recipient!r}") as connection:
            await connection.execute(insert(messages_table), row)
        return message

    async def list(
        self,
        recipient: str,
        *,
        tenant: str = "default",
        include_acked: bool = False,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[InboxMessage], str | None]:
        """`tenant`'s messages to `recipient`, oldest first, `limit` at a time, and the cursor
        of the next page (None on the last). Acknowledged messages only with `include_acked`."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
        table = messages_table
        query = select(table).where(table.c.tenant == tenant, table.c.recipient == recipient)
        if not include_acked:
            query = query.where(table.c.acked_at.is_(None))
        if cursor:
            created, message_id = decode_cursor(cursor, "this inbox")
            query = query.where(or_(
                table.c.created_at > created,
                and_(table.c.created_at == created, table.c.id > message_id),
            ))
        query = query.order_by(table.c.created_at, table.c.id).limit(limit + 1)
        rows = await self._fetch(query)
        messages = [message_from_row(row) for row in rows[:limit]]
        last = messages[-1] if len(rows) > limit else None
        next_cursor = encode_cursor(last.created_at, last.id) if last else None
        return messages, next_cursor

    async def ack(self, message_id: str, *, tenant: str = "default") -> InboxMessage:
        """Mark `tenant`'s message read and return it; `NotFound` if `tenant` has no such
        message (another tenant's included, which stays unread). Acking an acknowledged
        message changes nothing."""
        table = messages_table
        mine = (table.c.id == message_id, table.c.tenant == tenant)
        async with self._transaction(f"acknowledging message {message_id!r}") as connection:
            await connection.execute(
                update(table).where(*mine, table.c.acked_at.is_(None)).values(acked_at=utcnow())
            )
            row = (await connection.execute(select(table).where(*mine))).first()
        if row is None:
            raise NotFound(f"no inbox message with id {message_id!r}",
                           {"message_id": message_id})
        return message_from_row(row)

    async def unacked_count(self, recipient: str, *, tenant: str = "default") -> int:
        """How many of `tenant`'s messages to `recipient` are not acknowledged."""
        rows = await self._fetch(
            select(func.count()).select_from(messages_table).where(
                messages_table.c.tenant == tenant, messages_table.c.recipient == recipient,
                messages_table.c.acked_at.is_(None))
        )
        return int(rows[0][0])
