"""The task list's filters and its keyset paging, over the store's own cursors.

    filters = TaskFilters.parse(query_params)
    listing = await list_filtered(port, tenant, filters, cursor)

Status and agent type are filtered by the store's indexed query. The time range uses the same
keyset: `until` starts the page at a cursor of that time, and `since` ends the listing at the
first task created before it. The text filter (a case-insensitive substring of the
description or the id) is applied to the store's pages as they come, newest first.

Guarantees:
- a page holds at most `limit` tasks of the caller's tenant, newest first, and `next_cursor`
  continues right after the last task the listing looked at, so paging on never skips nor
  repeats a task, whatever the filters;
- a listing reads at most `MAX_SCANNED` tasks: a text filter over more than that stops early
  with `scan_capped` set and a cursor to go on from, so a page never reads the whole table;
- a bad filter (unknown status, a time that does not parse, an over-long value) is
  `InvalidRequest` naming the field, before anything is read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Final

from serve_apps.platform_port import PlatformPort
from storage.cursor import decode_cursor, encode_cursor
from storage.errors import InvalidRequest
from storage.messages import Task, TaskStatus

PAGE_SIZE: Final = 50
SCAN_PAGE: Final = 200
MAX_SCANNED: Final = 2_000
MAX_TEXT: Final = 200


@dataclasses.dataclass(frozen=True)
class TaskFilters:
    status: str | None = None
    agent_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> TaskFilters:
        """The filters of a query string (empty values are no filter)."""
        def value(name: str, limit: int = 64) -> str | None:
            raw = (params.get(name) or "").strip()
            if len(raw) > limit:
                raise InvalidRequest(f"{name} is {len(raw)} characters; at most {limit}",
                                     {"field": name, "limit": limit})
            return raw or None

        status = value("status")
        if status is not None and status not in {s.value for s in TaskStatus}:
            known = ", ".join(s.value for s in TaskStatus)
            raise InvalidRequest(f"status must be one of {known}, not {status!r}",
                                 {"field": "status"})
        since, until = _time(value("since"), "since"), _time(value("until"), "until")
        if since and until and since >= until:
            raise InvalidRequest("since must be before until", {"field": "since"})
        return cls(status, value("agent_type"), since, until, value("q", MAX_TEXT))

    def query(self) -> dict[str, str]:
        """The filters as query parameters (for links to other pages of the same listing)."""
        params = {"status": self.status, "agent_type": self.agent_type, "q": self.text,
                  "since": _local(self.since), "until": _local(self.until)}
        return {k: v for k, v in params.items() if v}

    def matches(self, task: Task) -> bool:
        if self.text is None:
            return True
        needle = self.text.casefold()
        return needle in task.description.casefold() or needle in task.id.casefold()

    @property
    def any(self) -> bool:
        return bool(self.query())


@dataclasses.dataclass(frozen=True)
class TaskListing:
    tasks: list[Task]
    next_cursor: str | None
    scanned: int
    scan_capped: bool


async def list_filtered(port: PlatformPort, tenant: str, filters: TaskFilters,
                        cursor: str | None = None, limit: int = PAGE_SIZE) -> TaskListing:
    """One page of `tenant`'s tasks that pass `filters` (see the module's guarantees)."""
    if cursor:
        decode_cursor(cursor)  # InvalidRequest naming the field, before any read
    elif filters.until is not None:
        cursor = encode_cursor(filters.until, "")
    found: list[Task] = []
    scanned = 0
    while True:
        size = limit if filters.text is None else SCAN_PAGE
        page = await port.list_tasks(status=filters.status, agent_type=filters.agent_type,
                                     tenant=tenant, limit=size, cursor=cursor)
        for index, task in enumerate(page.tasks):
            scanned += 1
            if filters.since is not None and task.created_at < filters.since:
                return TaskListing(found, None, scanned, False)
            if filters.matches(task):
                found.append(task)
            last_on_page = index == len(page.tasks) - 1
            if len(found) == limit:
                more = not last_on_page or page.next_cursor is not None
                return TaskListing(found, encode_cursor(task.created_at, task.id) if more
                                   else None, scanned, False)
            if scanned >= MAX_SCANNED and not (last_on_page and page.next_cursor is None):
                return TaskListing(found, encode_cursor(task.created_at, task.id), scanned,
                                   True)
        if page.next_cursor is None:
            return TaskListing(found, None, scanned, False)
        cursor = page.next_cursor


def _time(raw: str | None, field: str) -> datetime | None:
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(f"{field} must be a time like 2026-01-31T13:45 (UTC), "
                             f"not {raw!r}", {"field": field}) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _local(value: datetime | None) -> str | None:
    """A time as a `datetime-local` input shows it (UTC, to the minute or second)."""
    if value is None:
        return None
    text = value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return text[:-3] if text.endswith(":00") else text
