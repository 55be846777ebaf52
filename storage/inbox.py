"""Agent inboxes: messages posted to an agent type, kept until the recipient acknowledges them.

An inbox is addressed by tenant and agent type (`recipient`), not by replica, so a message
outlives the replica that was running when it arrived. Every read and ack names its tenant: a
tenant lists and counts only its own messages, and another tenant's message is `NotFound`,
exactly like one that does not exist. Messages are read oldest first; acknowledging one hides
it from the default listing but keeps it, and acknowledging again changes nothing (the first
`acked_at` stands), so a reader that crashes between reading and acking may safely ack again.

Messages that start work (`actors.message_pump`) have their own reads and writes here, the only
ones that span tenants: `to_start` and `started_unreplied` list messages of every tenant for
the pump, and each mark names the message's tenant. A message is started once
(`mark_started` records the first task and acks it) and replied to once: `mark_replied`
settles the reply and posts it in one transaction, so a pump that crashes and tries again never
posts a second reply. A reply (`in_reply_to` set) never starts work itself, so two types that
start work from messages cannot answer each other forever.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, literal, or_, select, true, update

from storage.cursor import decode_cursor, encode_cursor
from storage.database import EngineStore
from storage.errors import InvalidRequest, NotFound
from storage.messages import InboxMessage, as_utc, new_task_id, utcnow
from storage.models import messages_table
from storage.storable import check_text

MAX_BODY_BYTES = 256 * 1024
MAX_PAGE = 1000
_LENGTHS = {"recipient": 64, "tenant": 64, "sender": 64, "task_id": 32, "subject": 200,
            "in_reply_to": 32}
Messages = list[InboxMessage]  # (`InboxStore.list` hides the builtin in the class's scope)
Position = tuple[datetime, str]
"""Where a scan of messages stands: the creation time and id of the last message it saw."""


def message_from_row(row: Any) -> InboxMessage:
    return InboxMessage(
        id=row.id, recipient=row.recipient, body=row.body, created_at=as_utc(row.created_at),
        tenant=row.tenant, sender=row.sender, task_id=row.task_id, subject=row.subject,
        acked_at=as_utc(row.acked_at) if row.acked_at is not None else None,
        in_reply_to=row.in_reply_to, started_task_id=row.started_task_id,
        replied_at=as_utc(row.replied_at) if row.replied_at is not None else None,
    )


def body_size(body: Any) -> int:
    """The size of `body` as compact UTF-8 JSON; `InvalidRequest` when it is not plain JSON."""
    try:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"message body is not plain JSON: {exc}") from exc
    return len(text.encode())


def _new_message(recipient: str, body: Any, *, sender: str | None, task_id: str | None,
                 subject: str | None, tenant: str, in_reply_to: str | None) -> InboxMessage:
    """A new message, checked; `InvalidRequest` naming the field that is wrong."""
    _check_fields(body, {"recipient": recipient, "tenant": tenant, "sender": sender,
                         "task_id": task_id, "subject": subject, "in_reply_to": in_reply_to})
    return InboxMessage(id=new_task_id(), recipient=recipient, body=body, created_at=utcnow(),
                        tenant=tenant, sender=sender, task_id=task_id, subject=subject,
                        in_reply_to=in_reply_to)


def _row(message: InboxMessage) -> dict[str, Any]:
    return {"id": message.id, "tenant": message.tenant, "recipient": message.recipient,
            "sender": message.sender, "task_id": message.task_id, "subject": message.subject,
            "body": message.body, "created_at": message.created_at, "acked_at": None,
            "in_reply_to": message.in_reply_to, "started_task_id": None, "replied_at": None}


def _after(position: Position | None) -> Any:
    """The condition of the messages after `position` in (created_at, id) order."""
    table = messages_table
    if position is None:
        return true()
    created, message_id = position
    return or_(table.c.created_at > created,
               and_(table.c.created_at == created, table.c.id > message_id))


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
        in_reply_to: str | None = None,
    ) -> InboxMessage:
        """Store `body` (any JSON value but null, at most `MAX_BODY_BYTES`) in `recipient`'s
        inbox; `in_reply_to` names the message it answers. Committed when this returns."""
        message = _new_message(recipient, body, sender=sender, task_id=task_id,
                               subject=subject, tenant=tenant, in_reply_to=in_reply_to)
        async with self._transaction(f"posting a message to {recipient!r}") as connection:
            await connection.execute(insert(messages_table), _row(message))
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
            query = query.where(_after(decode_cursor(cursor, "this inbox")))
        query = query.order_by(table.c.created_at, table.c.id).limit(limit + 1)
        rows = await self._fetch(query)
        messages = [message_from_row(row) for row in rows[:limit]]
        last = messages[-1] if len(rows) > limit else None
        next_cursor = encode_cursor(last.created_at, last.id) if last else None
        return messages, next_cursor

    async def ack(self, message_id: str, *, tenant: str = "default",
                  recipient: str | None = None) -> InboxMessage:
        """Mark `tenant`'s message read and return it; `NotFound` if `tenant` has no such
        message (another tenant's included, which stays unread) or, with `recipient`, none in
        that inbox. Acking an acknowledged message changes nothing."""
        table = messages_table
        mine = [table.c.id == message_id, table.c.tenant == tenant]
        if recipient is not None:
            mine.append(table.c.recipient == recipient)
        async with self._transaction(f"acknowledging message {message_id!r}") as connection:
            await connection.execute(
                update(table).where(*mine, table.c.acked_at.is_(None)).values(acked_at=utcnow())
            )
            row = (await connection.execute(select(table).where(*mine))).first()
        if row is None:
            if recipient is not None:
                raise NotFound(f"no message {message_id!r} in the {recipient!r} inbox",
                               {"message_id": message_id, "agent_type": recipient})
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

    # ----------------------------------------------------------------- messages that start work

    async def to_start(self, recipients: Collection[str], limit: int = 100,
                       after: Position | None = None) -> Messages:
        """Messages of every tenant to `recipients` that nobody acknowledged, that started no
        task and that are not replies: oldest first, `limit` of them, after `after`."""
        if not recipients:
            return []
        table = messages_table
        query = select(table).where(
            table.c.recipient.in_(sorted(recipients)), table.c.acked_at.is_(None),
            table.c.started_task_id.is_(None), table.c.in_reply_to.is_(None), _after(after),
        ).order_by(table.c.created_at, table.c.id).limit(_page(limit))
        return [message_from_row(row) for row in await self._fetch(query)]

    async def mark_started(self, message_id: str, tenant: str, task_id: str) -> bool:
        """Record that `tenant`'s message started task `task_id`, and acknowledge it (an
        earlier `acked_at` stands). True when this call recorded it; False when the message
        had started a task already (that task stays recorded). `NotFound` for no such message
        of `tenant`."""
        check_text("message", "task_id", task_id, _LENGTHS["task_id"])
        table = messages_table
        mine = (table.c.id == message_id, table.c.tenant == tenant)
        async with self._transaction(f"marking message {message_id!r} started") as connection:
            result = await connection.execute(
                update(table).where(*mine, table.c.started_task_id.is_(None)).values(
                    started_task_id=task_id, acked_at=_acked_by_now(utcnow())))
            if result.rowcount:
                return True
            if (await connection.execute(select(table.c.id).where(*mine))).first() is None:
                raise NotFound(f"no inbox message with id {message_id!r}",
                               {"message_id": message_id})
        return False

    async def started_unreplied(self, limit: int = 100,
                                after: Position | None = None) -> Messages:
        """Messages of every tenant that started a task and whose reply is not settled yet:
        oldest first, `limit` of them, after `after`."""
        table = messages_table
        query = select(table).where(
            table.c.started_task_id.is_not(None), table.c.replied_at.is_(None), _after(after),
        ).order_by(table.c.created_at, table.c.id).limit(_page(limit))
        return [message_from_row(row) for row in await self._fetch(query)]

    async def mark_replied(
        self,
        message_id: str,
        tenant: str,
        *,
        reply_to: str | None = None,
        body: Any = None,
        sender: str | None = None,
        task_id: str | None = None,
        subject: str | None = None,
    ) -> InboxMessage | None:
        """Settle the reply to `tenant`'s message, once: acknowledge it (an earlier `acked_at`
        stands), record `replied_at` and, with `reply_to`, post `body` to that inbox of the
        same tenant as a reply (`in_reply_to` the message), all in one transaction. Returns
        the reply this call posted; None when it posted none, or the reply was settled before
        (nothing changes then). `NotFound` for no such message of `tenant`; `InvalidRequest`
        for a bad reply, and nothing changes."""
        reply = None
        if reply_to is not None:
            reply = _new_message(reply_to, body, sender=sender, task_id=task_id,
                                 subject=subject, tenant=tenant, in_reply_to=message_id)
        table = messages_table
        mine = (table.c.id == message_id, table.c.tenant == tenant)
        now = utcnow()
        async with self._transaction(f"replying to message {message_id!r}") as connection:
            result = await connection.execute(
                update(table).where(*mine, table.c.replied_at.is_(None)).values(
                    replied_at=now, acked_at=_acked_by_now(now)))
            if not result.rowcount:
                if (await connection.execute(select(table.c.id).where(*mine))).first() is None:
                    raise NotFound(f"no inbox message with id {message_id!r}",
                                   {"message_id": message_id})
                return None
            if reply is not None:
                await connection.execute(insert(table), _row(reply))
        return reply


def _acked_by_now(now: datetime) -> Any:
    """`acked_at` as it stands, or `now` for a message nobody acknowledged."""
    column = messages_table.c.acked_at
    return func.coalesce(column, literal(now, column.type))


def _page(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
    return limit
