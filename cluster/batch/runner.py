"""Running one batch: submit its lines through the orchestrator with bounded work in flight,
and write one result per input line, in input order.

Guarantees
- Every input line gets exactly one result line, in input order: a task's outcome (`status`
  is the task's: succeeded, failed, dead or cancelled), `invalid` for a bad line (with its line
  number and what is wrong), or `skipped` for a blank line.
- At most `max_in_flight` lines are between reading and writing at any time (submitted and
  unfinished, or finished and waiting for an earlier line), so memory stays bounded however
  long the input is.
- Each line's task carries the batch id and the idempotency key `batch:<batch id>:<line>`.
  Submitting a line again (a re-run of a stopped job) gets the task it already has: a
  finished task is reported as it stands and never runs again; an unfinished one is waited
  for. A failed or dead task is reported as failed or dead, not retried (requeue dead ones
  with `ymera requeue`).
- A line whose existing task has another description than the line now (the same batch id
  used for different input) is reported `invalid` with code `batch_mismatch`.
- A workflow line (`cluster.batch.workflows`) starts a run with its idempotency key and is
  reported once the run finished (its status: succeeded, failed or cancelled); the same key
  again gets the same run, so a re-run resumes it. An existing run of another workflow under
  that key is `batch_mismatch`. The summary counts runs by outcome under `runs`.

The orchestrator is reached through `BatchBackend`, so this runs without Ray in tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import IO, Any, Protocol, TypeVar

from actors.errors import PlatformUnavailable, QueueFull
from cluster.batch.input import BatchLine
from cluster.batch.workflows import WorkflowRequest, run_result
from ml.errors import NoConfidentRoute
from storage.errors import InvalidRequest
from storage.messages import Task, TaskError, TaskRequest, TaskStatus, utcnow
from storage.workflow_records import RunDetail, RunStatus

log = logging.getLogger("ymera.batch")

LINE_ERRORS = (InvalidRequest, NoConfidentRoute)
SUBMISSION_INDEX = re.compile(r"^task \d+: ")  # the orchestrator's index in one submission
UNAVAILABLE_RETRY_S = (1.0, 2.0, 5.0, 10.0, 10.0, 10.0)


class BatchBackend(Protocol):
    async def submit_many_async(self, requests: list[TaskRequest]) -> list[str]: ...

    async def wait_many_async(self, task_ids: list[str],
                              timeout_s: float | None = None) -> list[Task]: ...

    async def submit_workflow_async(self, document: dict[str, Any] | str, input: Any = None, *,
                                    idempotency_key: str | None = None,
                                    tenant: str = "default",
                                    wait_s: float | None = None) -> RunDetail: ...

    async def wait_run_async(self, run_id: str, timeout_s: float | None = None,
                             tenant: str = "default") -> RunDetail: ...


@dataclasses.dataclass(frozen=True)
class BatchOptions:
    batch_id: str
    tenant: str = "default"
    chunk_size: int = 500
    max_in_flight: int = 2500
    wait_slice_s: float = 10.0
    progress_interval_s: float = 10.0


@dataclasses.dataclass
class BatchProgress:
    """Running counts of one run; `line()` is the progress line the job log shows."""

    batch_id: str
    total_lines: int | None = None
    read: int = 0
    written: int = 0
    succeeded: int = 0
    failed: int = 0
    invalid: int = 0
    skipped: int = 0
    submitted: int = 0
    reused: int = 0
    runs_submitted: int = 0
    runs: dict[str, int] = dataclasses.field(
        default_factory=lambda: {status.value: 0 for status in RunStatus if status.is_finished})
    started: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed

    @property
    def runs_finished(self) -> int:
        return sum(self.runs.values())

    @property
    def in_flight(self) -> int:
        return self.submitted - self.finished + self.runs_submitted - self.runs_finished

    @property
    def accounted(self) -> int:
        return self.finished + self.runs_finished + self.invalid + self.skipped

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.finished / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        total = f"/{self.total_lines}" if self.total_lines is not None else ""
        eta = "?"
        if self.total_lines is not None and rate > 0:
            eta = f"{max(0, self.total_lines - self.accounted) / rate:.0f}s"
        runs = ""
        if self.runs_submitted:
            runs = "; runs " + ", ".join(f"{status} {count}" for status, count in self.runs.items())
        return (f"batch {self.batch_id}: {self.accounted}{total} lines done: succeeded "
                f"{self.succeeded}, failed {self.failed}, invalid {self.invalid}, skipped "
                f"{self.skipped}{runs}; in flight {self.in_flight}; {rate:.0f} tasks/s; "
                f"ETA {eta}")

    def summary(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        return {"batch_id": self.batch_id, "lines": self.written, "succeeded": self.succeeded,
                "failed": self.failed, "invalid": self.invalid, "skipped": self.skipped,
                "tasks": self.finished, "runs": dict(self.runs), "reused": self.reused,
                "seconds": round(elapsed, 3),
                "tasks_per_second": round(self.finished / elapsed, 1) if elapsed > 0 else None}


def line_result(line: BatchLine, task: Task | None = None,
                error: TaskError | None = None) -> dict[str, Any]:
    """One results line: the line number, the status and, for a task, its id, agent type,
    attempts and result or error."""
    if task is None:
        error = error or line.error
        return {"line": line.number, "status": "skipped" if error is None else "invalid",
                "task_id": None, "agent_type": None, "attempts": 0, "result": None,
                "error": error.to_json() if error else None}
    return {"line": line.number, "status": task.status.value, "task_id": task.id,
            "agent_type": task.agent_type, "attempts": task.attempts, "result": task.result,
            "error": task.error.to_json() if task.error else None}


class BatchRun:
    """One run of one batch over its lines; `run()` returns the summary."""

    def __init__(self, backend: BatchBackend, options: BatchOptions, output: IO[bytes],
                 total_lines: int | None = None,
                 report: Callable[[str], None] = print) -> None:
        if options.chunk_size < 1 or options.max_in_flight < options.chunk_size:
            raise InvalidRequest("chunk size must be at least 1 and at most max_in_flight")
        self.backend = backend
        self.options = options
        self.output = output
        self.report = report
        self.progress = BatchProgress(options.batch_id, total_lines)
        self.started_at = utcnow()

    async def run(self, lines: Iterable[BatchLine]) -> dict[str, Any]:
        slots = asyncio.Semaphore(max(1, self.options.max_in_flight // self.options.chunk_size))
        chunks: asyncio.Queue[asyncio.Task | None] = asyncio.Queue()
        writer = asyncio.create_task(self._write_in_order(chunks, slots))
        reporter = asyncio.create_task(self._report_every(self.options.progress_interval_s))
        pending: set[asyncio.Future] = set()  # cancelled if the run ends early
        try:
            iterator = iter(lines)
            while chunk := await asyncio.to_thread(_next_chunk, iterator, self.options.chunk_size):
                slot = _tracked(asyncio.ensure_future(slots.acquire()), pending)
                await asyncio.wait({slot, writer}, return_when=asyncio.FIRST_COMPLETED)
                if writer.done():
                    slot.cancel()
                    break  # it failed: its error is raised below
                self.progress.read += len(chunk)
                task = _tracked(asyncio.create_task(self._run_chunk(chunk)), pending)
                chunks.put_nowait(task)
            chunks.put_nowait(None)
            await writer
        finally:
            reporter.cancel()
            for future in [writer, *pending]:
                future.cancel()
        self.report(self.progress.line())
        return self.progress.summary()

    async def _write_in_order(self, chunks: asyncio.Queue, slots: asyncio.Semaphore) -> None:
        while (task := await chunks.get()) is not None:
            for result in await task:
                self.output.write(json.dumps(result, default=str).encode() + b"\n")
                self.progress.written += 1
            slots.release()

    async def _report_every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.report(self.progress.line())

    async def _run_chunk(self, chunk: list[BatchLine]) -> list[dict[str, Any]]:
        results: dict[int, dict[str, Any]] = {}
        for line in chunk:
            if line.request is None and line.workflow is None:
                results[line.number] = line_result(line)
                if line.error is None:
                    self.progress.skipped += 1
                else:
                    self.progress.invalid += 1
        await asyncio.gather(
            self._run_tasks([line for line in chunk if line.request is not None], results),
            *(self._run_workflow(line, line.workflow, results)
              for line in chunk if line.workflow is not None))
        return [results[line.number] for line in chunk]

    async def _run_tasks(self, lines: list[BatchLine],
                         results: dict[int, dict[str, Any]]) -> None:
        waiting = await self._submit(lines, results)
        while waiting:
            tasks = await _retrying_unavailable(self.backend.wait_many_async, list(waiting),
                                                self.options.wait_slice_s)
            for task in tasks:
                if task.status.is_terminal:
                    self._finished(waiting.pop(task.id), task, results)

    async def _run_workflow(self, line: BatchLine, request: WorkflowRequest,
                            results: dict[int, dict[str, Any]]) -> None:
        """Start the line's run (or find the one its key already has) and wait for it."""
        while True:
            try:
                detail = await _retrying_unavailable(
                    lambda: self.backend.submit_workflow_async(
                        request.document, request.input,
                        idempotency_key=request.idempotency_key, tenant=request.tenant))
                break
            except LINE_ERRORS as exc:
                self._refused(line, exc, results)
                return
            except QueueFull as exc:
                await asyncio.sleep(getattr(exc, "retry_after_s", None) or 1.0)
        run = detail.run
        if run.name != request.document.get("name"):
            self.progress.invalid += 1
            results[line.number] = line_result(line, error=TaskError(
                "batch_mismatch", f"line {line.number}: idempotency key "
                f"{request.idempotency_key!r} already has run {run.id} of workflow "
                f"{run.name!r}; use a new batch id (or key) for different input", False,
                "InvalidRequest", {"line": line.number, "run_id": run.id}))
            return
        self.progress.runs_submitted += 1
        if run.created_at < self.started_at:
            self.progress.reused += 1
        while not detail.run.status.is_finished:
            detail = await _retrying_unavailable(
                lambda: self.backend.wait_run_async(run.id, self.options.wait_slice_s,
                                                    request.tenant))
        self.progress.runs[detail.run.status.value] += 1
        results[line.number] = run_result(line.number, detail)

    def _finished(self, line: BatchLine, task: Task, results: dict[int, dict[str, Any]]) -> None:
        assert line.request is not None
        if task.description != line.request.description:
            self.progress.submitted -= 1
            self.progress.invalid += 1
            results[line.number] = line_result(line, error=TaskError(
                "batch_mismatch", f"line {line.number}: batch {self.options.batch_id} already "
                f"has task {task.id} for this line, with another description; use a new "
                "batch id for different input", False, "InvalidRequest",
                {"line": line.number, "task_id": task.id}))
            return
        if task.created_at < self.started_at:
            self.progress.reused += 1
        if task.status is TaskStatus.SUCCEEDED:
            self.progress.succeeded += 1
        else:
            self.progress.failed += 1
        results[line.number] = line_result(line, task)

    async def _submit(self, lines: list[BatchLine],
                      results: dict[int, dict[str, Any]]) -> dict[str, BatchLine]:
        """Submit `lines`' tasks; a line the orchestrator refuses is reported invalid and the
        others are submitted again. Returns the lines by task id."""
        while lines:
            try:
                ids = await self._submit_retrying([line.request for line in lines
                                                   if line.request is not None])
            except LINE_ERRORS as exc:
                index = exc.details.get("index")
                if len(lines) == 1:
                    index = 0
                if not isinstance(index, int) or not 0 <= index < len(lines):
                    return {**await self._submit_one_by_one(lines, results)}
                self._refused(lines.pop(index), exc, results)
                continue
            self.progress.submitted += len(ids)
            return dict(zip(ids, lines))
        return {}

    async def _submit_one_by_one(self, lines: list[BatchLine],
                                 results: dict[int, dict[str, Any]]) -> dict[str, BatchLine]:
        """For a refusal that does not say which line it was about."""
        accepted: dict[str, BatchLine] = {}
        for line in lines:
            accepted.update(await self._submit([line], results))
        return accepted

    def _refused(self, line: BatchLine, exc: Exception, results: dict[int, dict[str, Any]]
                 ) -> None:
        code = getattr(exc, "code", "invalid_request")
        message = SUBMISSION_INDEX.sub("", str(exc), count=1)
        details = {k: v for k, v in getattr(exc, "details", {}).items() if k != "index"}
        self.progress.invalid += 1
        results[line.number] = line_result(line, error=TaskError(
            code, f"line {line.number}: {message}", False, type(exc).__name__,
            {**details, "line": line.number}))

    async def _submit_retrying(self, requests: list[TaskRequest]) -> list[str]:
        """Submit, waiting out back-pressure (`QueueFull`) and short unavailability (an
        orchestrator restart) with the same idempotency keys, so no retry makes a task twice."""
        while True:
            try:
                return await _retrying_unavailable(self.backend.submit_many_async, requests)
            except QueueFull as exc:
                await asyncio.sleep(getattr(exc, "retry_after_s", None) or 1.0)


async def _retrying_unavailable(call: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """`call(*args)`, again after a pause while the platform is unavailable (for about 40 s:
    long enough for Ray to restart the orchestrator)."""
    for delay in (*UNAVAILABLE_RETRY_S, None):
        try:
            return await call(*args)
        except PlatformUnavailable as exc:
            if delay is None:
                raise
            log.warning("the platform is unavailable (%s); retrying in %gs", exc, delay)
            await asyncio.sleep(delay)


_Tracked = TypeVar("_Tracked", bound="asyncio.Future[Any]")


def _tracked(future: _Tracked, pending: set[asyncio.Future[Any]]) -> _Tracked:
    pending.add(future)
    future.add_done_callback(pending.discard)
    return future


def _next_chunk(lines: Iterator[BatchLine], size: int) -> list[BatchLine]:
    chunk = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= size:
            break
    return chunk
