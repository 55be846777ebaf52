"""Page cursors: where a keyset page ends, as an opaque string the client passes back.

A cursor names the last row of a page by its creation time and its id (the pages of tasks and
of inbox messages are ordered by both). It is URL-safe and carries nothing else; a string that
does not decode to one is `InvalidRequest` naming the `cursor` field, never a server error.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime

from storage.errors import InvalidRequest
from storage.messages import as_utc


def encode_cursor(created_at: datetime, row_id: str) -> str:
    """The cursor after the row created at `created_at` with id `row_id`."""
    raw = json.dumps([created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str, issuer: str = "this platform") -> tuple[datetime, str]:
    """The creation time (UTC) and id a cursor names; `issuer` says in the error who issues
    cursors for this listing."""
    try:
        created, row_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return as_utc(datetime.fromisoformat(created)), str(row_id)
    except Exception as exc:
        raise InvalidRequest(f"cursor {cursor!r} is not one {issuer} issued",
                             {"field": "cursor"}) from exc
