"""Page cursors round-trip, and anything else is a clear error naming the field."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from storage.cursor import decode_cursor, encode_cursor
from storage.errors import InvalidRequest


def test_a_cursor_names_the_row_it_was_made_from_in_utc():
    created = datetime(2026, 3, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))

    cursor = encode_cursor(created, "task-1")

    assert decode_cursor(cursor) == (created.astimezone(timezone.utc), "task-1")
    assert cursor.replace("-", "").replace("_", "").replace("=", "").isalnum()  # URL-safe


@pytest.mark.parametrize("cursor", ["", "not base64!", encode_cursor(datetime.now(), "x")[:-4],
                                    "WyJub3QgYSBkYXRlIiwgIngiXQ=="])
def test_a_cursor_not_issued_here_is_refused_naming_the_field(cursor: str):
    with pytest.raises(InvalidRequest, match="is not one this inbox issued") as caught:
        decode_cursor(cursor, "this inbox")
    assert caught.value.details == {"field": "cursor"}
