"""What storage can keep and show: JSON depth measured in values and in text (even text too
deep for Python's parser), and stored values too deep to show rendered as a marker."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from storage.messages import Task, TaskError, TaskStatus
from storage.storable import (
    MAX_DEPTH_CEILING, depth_excess, readable, text_depth, text_depth_excess,
    unreadable_marker)


def nested(levels: int, key: str = "a") -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {key: value}
    return value


@pytest.mark.parametrize("value, depth", [
    (1, 0), ([], 1), ({"a": [1, {"b": "[[[{{{"}]}, 3), (nested(64), 64), ('"\\"[["', 0)])
def test_text_depth_skips_strings(value, depth):
    text = value if isinstance(value, str) else json.dumps(value)
    assert text_depth(text, 64) == depth


def test_depth_is_measured_up_to_the_limit_whatever_the_text():
    assert text_depth("[" * 100_000 + "]" * 100_000, 64) == 65
    assert text_depth("[[[", 64) == 3  # unbalanced: as deep as it opens


def test_the_path_names_where_the_limit_is_crossed_in_values_and_text():
    value = {"x": [1, {"odd key!": nested(70)}]}
    expected = 'payload.x[1]["odd key!"].a…(57 levels)….a.a.a'  # 64 levels in all
    assert depth_excess(value, 64) == expected
    assert text_depth_excess(json.dumps({"payload": value}), 65) == expected
    assert depth_excess(nested(64), 64) is None
    assert text_depth_excess(json.dumps(nested(64)), 64) is None
    assert depth_excess({"a": {"b": [[]]}}, 3) == "payload.a.b[0]"


def test_a_value_too_deep_to_show_reads_as_the_marker():
    assert readable(nested(MAX_DEPTH_CEILING)) == nested(MAX_DEPTH_CEILING)
    assert readable(nested(MAX_DEPTH_CEILING + 1)) == unreadable_marker()
    assert readable(nested(5000)) == unreadable_marker()  # too deep for json.dumps
    assert readable("text") == "text" and readable(None) is None


def test_a_stored_task_too_deep_to_show_serialises_with_markers():
    now = datetime.now(timezone.utc)
    deep = nested(5000)
    task = Task("t", "d", deep, TaskStatus.FAILED, "sleeper", "acme", 0, 1, 1, 5.0, now, now,
                route=deep, result=[deep], error=TaskError("x", "old", details=deep))
    shown = json.loads(json.dumps(task.to_json()))
    marker = unreadable_marker()
    assert shown["payload"] == shown["route"] == shown["result"] == marker
    assert shown["error"] == {"code": "x", "message": "old", "retryable": False,
                              "error_type": "", "details": marker}


def test_an_event_too_deep_to_show_streams_with_the_marker():
    """What the SSE streams and the event bus send (`encode_event`)."""
    from storage.event_bus import encode_event
    from storage.messages import TaskEvent

    event = TaskEvent(7, "t", "failed", datetime.now(timezone.utc), 1, nested(5000))
    assert json.loads(encode_event(event))["data"] == unreadable_marker()
    fine = TaskEvent(8, "t", "queued", datetime.now(timezone.utc), None, {"agent_type": "x"})
    assert json.loads(encode_event(fine))["data"] == {"agent_type": "x"}


async def test_a_too_deep_row_already_stored_lists_with_markers(store) -> None:
    """On SQLite and PostgreSQL: a row written before the limit existed reads back, and
    shows as the marker instead of failing the page it is on."""
    from storage.task_store import WriteBatch

    now = datetime.now(timezone.utc)
    deep = nested(300)
    row = {"id": "d" * 32, "tenant": "acme", "description": "old", "payload": deep,
           "agent_type": "sleeper", "status": "succeeded", "priority": 0, "attempts": 1,
           "max_attempts": 1, "timeout_s": 5.0, "idempotency_key": None, "batch_id": None,
           "route": None, "result": deep, "error": None, "created_at": now, "updated_at": now,
           "finished_at": now}
    await store.apply(WriteBatch(new_tasks=[row]))
    [task] = (await store.list_tasks(tenant="acme")).tasks
    assert task.payload == deep  # storage keeps what it has; only showing it is bounded
    shown = json.loads(json.dumps(task.to_json()))
    assert shown["payload"] == shown["result"] == unreadable_marker()
