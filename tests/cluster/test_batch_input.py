"""Reading a batch's JSON Lines: every line gets a verdict, bad lines say what is wrong and
where, and results only appear once complete. No Ray, no database."""

from __future__ import annotations

import functools
import http.server
import io
import json
import sys
import threading
from pathlib import Path

import pytest

from cluster.batch.input import (
    default_batch_id,
    max_line_bytes,
    open_input,
    open_output,
    read_batch,
    scan_input,
)
from storage.errors import InvalidRequest

LIMIT = 2048


def verdicts(text: bytes, max_payload_bytes: int = LIMIT):
    return list(read_batch(io.BytesIO(text), batch_id="b1", tenant="acme",
                           max_payload_bytes=max_payload_bytes))


def test_a_good_line_becomes_a_request_keyed_by_batch_and_line():
    (line,) = verdicts(b'{"description": "add", "payload": {"numbers": [1, 2]}, '
                       b'"agent_type": "calculator", "priority": 5}\n')
    request = line.request
    assert line.number == 1 and line.error is None
    assert (request.description, request.payload, request.agent_type, request.priority) == (
        "add", {"numbers": [1, 2]}, "calculator", 5)
    assert (request.batch_id, request.tenant, request.idempotency_key) == ("b1", "acme",
                                                                            "batch:b1:1")


def test_bad_lines_are_reported_with_their_line_number_and_reason():
    big = json.dumps({"description": "big", "payload": {"blob": "x" * (LIMIT + 10)}})
    text = "\n".join([
        '{"description": "fine"}',
        '{"description": "broken",',
        '{"payload": {"a": 1}}',
        '{"description": "   "}',
        big,
        '["not", "an", "object"]',
        '{"description": "x", "colour": "red"}',
        '{"description": "x", "tenant": "other"}',
        '{"description": "x", "payload": [1]}',
    ]).encode() + b"\n"
    lines = verdicts(text)
    assert [line.number for line in lines] == list(range(1, 10))
    assert lines[0].request is not None
    codes = [(line.number, line.error.code) for line in lines[1:]]
    assert codes == [(2, "invalid_json"), (3, "invalid_task"), (4, "invalid_task"),
                     (5, "payload_too_large"), (6, "invalid_task"), (7, "invalid_task"),
                     (8, "invalid_task"), (9, "invalid_task")]
    assert all(line.error.message.startswith(f"line {line.number}: ") for line in lines[1:])
    assert all(line.error.details["line"] == line.number for line in lines[1:])
    assert "description" in lines[2].error.message
    assert "colour is not a task field" in lines[6].error.message
    assert "tenant is set by the batch" in lines[7].error.message


def test_a_line_too_long_to_parse_is_reported_without_losing_the_next_line():
    huge = b'{"description": "huge", "payload": {"blob": "' + b"y" * (3 * max_line_bytes(LIMIT))
    lines = verdicts(huge + b'"}}\n{"description": "after"}\n')
    assert lines[0].error.code == "line_too_long" and lines[0].number == 1
    assert lines[1].number == 2 and lines[1].request.description == "after"


def test_blank_lines_are_skipped_and_keep_their_numbers():
    lines = verdicts(b'{"description": "a"}\n\n   \n{"description": "b"}')
    assert [(line.number, line.skipped) for line in lines] == [(1, False), (2, True), (3, True),
                                                               (4, False)]
    assert lines[3].request.idempotency_key == "batch:b1:4"


def test_invalid_utf8_is_a_bad_line():
    (line,) = verdicts(b'{"description": "caf\xe9"}\n')
    assert line.error.code == "invalid_json" and "UTF-8" in line.error.message


def test_scan_counts_lines_and_the_default_batch_id_follows_the_content(tmp_path: Path):
    first, moved, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    first.write_bytes(b'{"description": "a"}\n{"description": "b"}')
    moved.write_bytes(first.read_bytes())
    other.write_bytes(b'{"description": "a"}\n')
    assert scan_input(str(first)).lines == 2 and scan_input(str(other)).lines == 1
    assert default_batch_id(scan_input(str(first))) == default_batch_id(scan_input(str(moved)))
    assert default_batch_id(scan_input(str(first))) != default_batch_id(scan_input(str(other)))


def test_a_missing_input_is_a_clear_error(tmp_path: Path):
    with pytest.raises(InvalidRequest, match="cannot read"):
        with open_input(str(tmp_path / "nope.jsonl")):
            pass


def test_results_appear_only_when_complete(tmp_path: Path):
    target = tmp_path / "out" / "results.jsonl"
    with pytest.raises(RuntimeError):
        with open_output(str(target)) as stream:
            stream.write(b"partial\n")
            raise RuntimeError("the job was stopped")
    assert not target.exists() and list(target.parent.iterdir()) == []
    with open_output(f"file://{target}") as stream:
        stream.write(b"all\n")
    assert target.read_bytes() == b"all\n"


def test_uris_need_smart_open_and_say_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "smart_open", None)
    with pytest.raises(InvalidRequest, match=r"ymera\[batch-cloud\]"):
        with open_input("s3://bucket/tasks.jsonl"):
            pass


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_a_batch_reads_from_a_uri_through_smart_open(tmp_path: Path):
    pytest.importorskip("smart_open")
    (tmp_path / "tasks.jsonl").write_bytes(b'{"description": "a"}\nnot json\n')
    handler = functools.partial(QuietFiles, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}/tasks.jsonl"
        assert scan_input(uri).lines == 2
        with open_input(uri) as stream:
            lines = list(read_batch(stream, batch_id="b1", tenant="default",
                                    max_payload_bytes=LIMIT))
    finally:
        server.shutdown()
        server.server_close()
    assert lines[0].request.description == "a" and lines[1].error.code == "invalid_json"


@pytest.mark.parametrize("levels", [65, 5000])
def test_a_line_nested_too_deep_is_a_bad_line_naming_the_path(levels):
    """Measured before parsing: 5000 levels would make json.loads itself fail."""
    deep = "[" * levels + "]" * levels
    first, second = verdicts(f'{{"description": "d", "payload": {{"x": {deep}}}}}\n'
                             '{"description": "fine", "payload": {"x": [[1]]}}\n'.encode())
    assert first.request is None and first.error.code == "invalid_task"
    assert first.error.details["path"].startswith("payload.x[0][0]")
    assert "payload is nested deeper than 64 levels at payload.x" in first.error.message
    assert second.request is not None and second.request.payload == {"x": [[1]]}
