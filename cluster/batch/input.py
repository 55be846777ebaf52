"""Batch input and output: JSON Lines from a local path or a URI, one task or run per line.

A line is a JSON object with a `description` and, optionally, `payload`, `agent_type`,
`priority`, `timeout_s` and `max_attempts` (the fields of `TaskRequest` a submitter chooses);
or a line with a `workflow` (a file or a document), which starts a run (see
`cluster.batch.workflows`). Every line gets a verdict here: a task request, a workflow run to
start, a blank line to skip, or a bad line with a `TaskError` that names what is wrong. A bad
line never stops a batch. A line's nesting is measured before it is parsed, so a line too deep
for Python's JSON parser is a bad line too.

Local paths need nothing extra. Other URIs (`s3://`, `gs://`, `azure://`, `http(s)://`, ...) are
read and written through smart_open, imported only when such a URI is used; the cloud clients
it needs come with the `batch-cloud` extra (`pip install 'ymera[batch-cloud]'`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from cluster.batch.workflows import (
    MAX_WORKFLOW_FILE_BYTES,
    WORKFLOW_SUFFIXES,
    LineProblem,
    WorkflowRequest,
    parse_document,
    workflow_request,
)
from storage.errors import InvalidRequest
from storage.messages import TaskError, TaskRequest
from storage.storable import DEFAULT_MAX_DEPTH, text_depth_excess

LINE_FIELDS = frozenset({"description", "payload", "agent_type", "priority", "timeout_s",
                         "max_attempts"})
BATCH_FIELDS = frozenset({"idempotency_key", "tenant", "batch_id"})
LINE_SLACK_BYTES = 64 * 1024
SCAN_BLOCK_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class BatchLine:
    """One input line's verdict: `request` for a task, `workflow` for a run, `error` for a bad
    line, none of them for a blank line (skipped). `number` counts from 1, as editors do."""

    number: int
    request: TaskRequest | None = None
    error: TaskError | None = None
    workflow: WorkflowRequest | None = None

    @property
    def skipped(self) -> bool:
        return self.request is None and self.error is None and self.workflow is None


@dataclasses.dataclass(frozen=True)
class InputScan:
    """What one pass over the input found: its line count and the SHA-256 of its bytes."""

    lines: int
    sha256: str


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://")).expanduser()


def _smart_open():
    try:
        import smart_open
    except ImportError as exc:
        raise InvalidRequest(
            f"reading or writing URIs needs smart_open ({exc}); install "
            "'ymera[batch-cloud]', or use a local path") from None
    return smart_open


@contextlib.contextmanager
def open_input(uri: str) -> Iterator[IO[bytes]]:
    """The input as a binary stream. A missing or unreadable input is `InvalidRequest`."""
    try:
        if is_local(uri):
            stream = open(local_path(uri), "rb")
        else:
            stream = _smart_open().open(uri, "rb")
    except InvalidRequest:
        raise
    except ImportError as exc:  # smart_open without the scheme's client library
        raise InvalidRequest(f"cannot read {uri}: {exc}; install 'ymera[batch-cloud]'") from None
    except Exception as exc:
        raise InvalidRequest(f"cannot read {uri}: {exc}", {"input": uri}) from None
    with stream:
        yield stream


@contextlib.contextmanager
def open_output(uri: str) -> Iterator[IO[bytes]]:
    """A binary stream whose content appears at `uri` only when the block ends without an
    error: a local file is written beside its destination and renamed into place, so a
    results file that exists is complete; a smart_open upload is aborted on error."""
    if not is_local(uri):
        try:
            stream = _smart_open().open(uri, "wb")
        except InvalidRequest:
            raise
        except Exception as exc:
            raise InvalidRequest(f"cannot write {uri}: {exc}", {"output": uri}) from None
        with stream:
            yield stream
        return
    target = local_path(uri).resolve()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial",
                                               dir=target.parent)
    except OSError as exc:
        raise InvalidRequest(f"cannot write {uri}: {exc}", {"output": uri}) from None
    try:
        with os.fdopen(descriptor, "wb") as stream:
            yield stream
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)


class WorkflowFiles:
    """The workflow files batch lines name, read once each: a relative name is relative to
    the directory of the batch input `input_uri` (the current directory without one)."""

    def __init__(self, input_uri: str | None = None) -> None:
        self.input_uri = input_uri
        self._loaded: dict[str, dict | LineProblem] = {}

    def location(self, name: str) -> str:
        if not is_local(name) or Path(name).expanduser().is_absolute():
            return name
        if self.input_uri is None:
            return str(Path(name).resolve())
        if is_local(self.input_uri):
            return str((local_path(self.input_uri).resolve().parent / name).resolve())
        return f"{self.input_uri.rsplit('/', 1)[0]}/{name}"

    def load(self, name: str) -> dict:
        """The document in file `name` (`LineProblem` naming it when it cannot be one)."""
        where = self.location(name)
        if where not in self._loaded:
            try:
                self._loaded[where] = self._read(name, where)
            except LineProblem as problem:
                self._loaded[where] = problem
        found = self._loaded[where]
        if isinstance(found, LineProblem):
            raise found
        return found

    def _read(self, name: str, where: str) -> dict:
        details = {"field": "workflow", "workflow": name}
        if not where.lower().endswith(WORKFLOW_SUFFIXES):
            raise LineProblem("invalid_workflow", f"workflow {name}: a workflow file ends in "
                              ".yaml, .yml or .json", details)
        try:
            with open_input(where) as stream:
                data = stream.read(MAX_WORKFLOW_FILE_BYTES + 1)
        except InvalidRequest as exc:
            raise LineProblem("invalid_workflow", f"workflow {name}: {exc.message}",
                              details) from None
        if len(data) > MAX_WORKFLOW_FILE_BYTES:
            raise LineProblem("invalid_workflow", f"workflow {name} is larger than "
                              f"{MAX_WORKFLOW_FILE_BYTES} bytes", details)
        try:
            return parse_document(data.decode("utf-8"), name)
        except UnicodeDecodeError as exc:
            raise LineProblem("invalid_workflow", f"workflow {name} is not UTF-8: {exc}",
                              details) from None


def scan_input(uri: str) -> InputScan:
    """Count the input's lines and hash its bytes in one streaming pass."""
    digest = hashlib.sha256()
    lines = 0
    last = b"\n"
    with open_input(uri) as stream:
        while block := stream.read(SCAN_BLOCK_BYTES):
            digest.update(block)
            lines += block.count(b"\n")
            last = block[-1:]
    return InputScan(lines + (last != b"\n"), digest.hexdigest())


def default_batch_id(scan: InputScan) -> str:
    """The batch id of an input that names none: from its content alone, so re-running the
    same tasks (wherever the file now lives) resumes the same batch."""
    return f"b-{scan.sha256[:20]}"


def max_line_bytes(max_payload_bytes: int) -> int:
    """The longest line worth parsing: room for an escaped payload at the limit plus the
    other fields. A longer line is reported as oversized without being held in memory."""
    return 2 * max_payload_bytes + LINE_SLACK_BYTES


def raw_lines(stream: IO[bytes], limit: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) for each line, None for the bytes of a line longer than `limit`
    (its rest is read and dropped, never held)."""
    number = 0
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        number += 1
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := stream.readline(SCAN_BLOCK_BYTES)) and not rest.endswith(b"\n"):
                pass
            yield number, None
        else:
            yield number, line


def _bad(number: int, code: str, message: str, **details: object) -> BatchLine:
    return BatchLine(number, error=TaskError(code, f"line {number}: {message}", False,
                                             "InvalidRequest", {"line": number, **details}))


def parse_line(number: int, raw: bytes | None, *, batch_id: str, tenant: str,
               max_payload_bytes: int, max_payload_depth: int = DEFAULT_MAX_DEPTH,
               workflow_files: WorkflowFiles | None = None) -> BatchLine:
    """The verdict on one line. Checks what can be checked without the platform (nesting,
    JSON, the fields, the description, the payload's size, a workflow file's syntax); the
    orchestrator checks the rest when the task or run is submitted, and its refusal is
    reported for that line the same way."""
    if raw is None:
        return _bad(number, "line_too_long", "the line is longer than "
                    f"{max_line_bytes(max_payload_bytes)} bytes", field="payload")
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        return _bad(number, "invalid_json", f"not UTF-8: {exc}")
    if not text.strip():
        return BatchLine(number)
    too_deep = text_depth_excess(text, max_payload_depth + 1)  # +1: the line's own level
    if too_deep is not None:
        field = too_deep.split(".", 1)[0].split("[", 1)[0] or "payload"
        return _bad(number, "invalid_task", f"{field} is nested deeper than {max_payload_depth} "
                    f"levels at {too_deep}", field=field, path=too_deep,
                    limit=max_payload_depth)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return _bad(number, "invalid_json", f"not valid JSON: {exc.msg} at column {exc.colno}")
    if not isinstance(data, dict):
        return _bad(number, "invalid_task", f"must be a JSON object, not {type(data).__name__}")
    if "workflow" in data:
        return _workflow_line(number, data, batch_id=batch_id, tenant=tenant,
                              max_payload_bytes=max_payload_bytes,
                              workflow_files=workflow_files or WorkflowFiles())
    owned = sorted(BATCH_FIELDS & set(data))
    if owned:
        return _bad(number, "invalid_task", f"{owned[0]} is set by the batch, not by a line",
                    field=owned[0])
    unknown = sorted(set(data) - LINE_FIELDS)
    if unknown:
        return _bad(number, "invalid_task", f"{unknown[0]} is not a task field; known fields: "
                    f"{', '.join(sorted(LINE_FIELDS))}", field=unknown[0])
    description = data.get("description")
    if not isinstance(description, str) or not description.strip():
        return _bad(number, "invalid_task", "description must be a non-empty string",
                    field="description")
    payload = data.get("payload", {})
    if not isinstance(payload, dict):
        return _bad(number, "invalid_task", "payload must be a JSON object", field="payload")
    try:
        size = len(json.dumps(payload, allow_nan=False, separators=(",", ":")))
    except ValueError as exc:
        return _bad(number, "invalid_task", f"payload is not valid JSON: {exc}", field="payload")
    if size > max_payload_bytes:
        return _bad(number, "payload_too_large", f"payload is {size} bytes; the limit is "
                    f"{max_payload_bytes}", field="payload", size=size)
    fields = {k: v for k, v in data.items() if k not in ("description", "payload")}
    return BatchLine(number, TaskRequest(
        description, payload, idempotency_key=f"batch:{batch_id}:{number}", tenant=tenant,
        batch_id=batch_id, **fields))


def _workflow_line(number: int, data: dict, *, batch_id: str, tenant: str,
                   max_payload_bytes: int, workflow_files: WorkflowFiles) -> BatchLine:
    try:
        request = workflow_request(data, number, batch_id=batch_id, tenant=tenant,
                                   max_payload_bytes=max_payload_bytes, load=workflow_files.load)
    except LineProblem as problem:
        return _bad(number, problem.code, problem.message, **problem.details)
    return BatchLine(number, workflow=request)


def read_batch(stream: IO[bytes], *, batch_id: str, tenant: str, max_payload_bytes: int,
               max_payload_depth: int = DEFAULT_MAX_DEPTH,
               workflow_files: WorkflowFiles | None = None) -> Iterator[BatchLine]:
    """Every line of `stream`, in order, with its verdict; workflow files named by lines are
    found through `workflow_files` (by default, relative to the current directory)."""
    limit = max_line_bytes(max_payload_bytes)
    files = workflow_files or WorkflowFiles()
    for number, raw in raw_lines(stream, limit):
        yield parse_line(number, raw, batch_id=batch_id, tenant=tenant,
                         max_payload_bytes=max_payload_bytes,
                         max_payload_depth=max_payload_depth, workflow_files=files)
