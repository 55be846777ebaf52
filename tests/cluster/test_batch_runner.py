"""A batch run against the real orchestrator logic, in process (no Ray): results in input
order, bad lines reported and skipped over, bounded work in flight, and a re-run that resumes
without running anything twice."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from actors.config import PoolConfig
from actors.errors import PlatformUnavailable
from actors.orchestrator import Orchestrator
from actors.retry import RetryPolicy
from cluster.batch import runner as batch_runner
from cluster.batch.input import read_batch
from cluster.batch.runner import BatchOptions, BatchRun
from storage.errors import NotFound
from storage.messages import TaskStatus
from tests.support.inprocess_platform import inprocess_orchestrator

MAX_PAYLOAD = 2048


@pytest.fixture
async def orchestrator(tmp_path):
    async with inprocess_orchestrator(
            tmp_path, pools={"sleeper": PoolConfig(replicas=2, concurrency=4),
                             "flaky": PoolConfig(replicas=1, concurrency=4)},
            queue_max=12, max_payload_bytes=MAX_PAYLOAD,
            retry=RetryPolicy(max_attempts=2, backoff_base_s=0.01, backoff_max_s=0.05)
    ) as running:
        yield running


class Backend:
    """The orchestrator as a batch sees it, counting what the batch asks of it. A call goes on
    when its caller is cancelled, as an actor call does when the job that made it stops."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self.runner: BatchRun | None = None
        self.most_in_flight = 0

    async def submit_many_async(self, requests):
        if self.runner is not None:
            progress = self.runner.progress
            self.most_in_flight = max(self.most_in_flight, progress.read - progress.written)
        return await asyncio.shield(self.orchestrator.submit_many(requests))

    async def wait_many_async(self, task_ids, timeout_s=None):
        return await asyncio.shield(self.orchestrator.wait_many(task_ids, timeout_s))


def mixed_lines(count: int) -> bytes:
    """`count` lines: mostly sleeper tasks, with a bad line, an unknown agent type, a task
    that fails and a blank line every ten."""
    lines = []
    for i in range(1, count + 1):
        kind = i % 10
        if kind == 3:
            lines.append('{"description": "broken", ')
        elif kind == 5:
            lines.append(json.dumps({"description": f"t{i}", "agent_type": "no_such_type"}))
        elif kind == 7:
            lines.append(json.dumps({"description": f"t{i}", "agent_type": "flaky",
                                     "payload": {"bad": True}}))
        elif kind == 9:
            lines.append("")
        else:
            lines.append(json.dumps({"description": f"t{i}", "agent_type": "sleeper",
                                     "payload": {"seconds": 0.01, "echo": i}}))
    return ("\n".join(lines) + "\n").encode()


async def run_batch(backend: Backend, text: bytes, batch_id: str = "b1", **options):
    output = io.BytesIO()
    defaults = dict(chunk_size=4, max_in_flight=12, wait_slice_s=0.5, progress_interval_s=60)
    runner = BatchRun(backend, BatchOptions(batch_id, **{**defaults, **options}), output,
                      report=lambda text: None)
    backend.runner = runner
    summary = await runner.run(read_batch(io.BytesIO(text), batch_id=batch_id,
                                          tenant="default", max_payload_bytes=MAX_PAYLOAD))
    return summary, [json.loads(line) for line in output.getvalue().splitlines()]


async def test_every_line_gets_one_result_in_input_order(orchestrator):
    backend = Backend(orchestrator)
    summary, results = await run_batch(backend, mixed_lines(40))
    assert [r["line"] for r in results] == list(range(1, 41))
    by_kind = {i: results[i - 1] for i in range(1, 41)}
    for i, result in by_kind.items():
        kind = i % 10
        if kind == 3:
            assert result["status"] == "invalid" and result["error"]["code"] == "invalid_json"
        elif kind == 5:
            assert result["status"] == "invalid"
            assert result["error"]["message"].startswith(f"line {i}: unknown agent_type")
            assert "no_such_type" in result["error"]["message"]
        elif kind == 7:
            assert result["status"] == "failed" and result["agent_type"] == "flaky"
            assert result["error"]["code"]
        elif kind == 9:
            assert result["status"] == "skipped" and result["error"] is None
        else:
            assert result["status"] == "succeeded" and result["result"]["echo"] == i
            assert result["agent_type"] == "sleeper" and result["attempts"] == 1
    assert summary == {**summary, "lines": 40, "succeeded": 24, "failed": 4, "invalid": 8,
                       "skipped": 4, "tasks": 28, "reused": 0}
    status = await orchestrator.batch_status("b1")
    assert status.total == 28 and status.counts["succeeded"] == 24
    assert status.counts["failed"] == 4 and status.finished == 28


async def test_work_in_flight_stays_bounded_and_back_pressure_is_waited_out(orchestrator):
    backend = Backend(orchestrator)  # queue_max is 12: submissions meet QueueFull
    summary, results = await run_batch(
        backend, "".join(json.dumps({"description": f"t{i}", "agent_type": "sleeper",
                                     "payload": {"seconds": 0.02}}) + "\n"
                         for i in range(60)).encode(),
        chunk_size=4, max_in_flight=16)
    assert summary["succeeded"] == 60 and len(results) == 60
    assert 0 < backend.most_in_flight <= 16


async def test_a_rerun_of_a_stopped_batch_runs_nothing_twice(orchestrator):
    text = mixed_lines(60)
    backend = Backend(orchestrator)
    stopped = asyncio.create_task(run_batch(backend, text))
    while backend.runner is None or backend.runner.progress.succeeded < 10:
        await asyncio.sleep(0.01)
    stopped.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopped
    before = await orchestrator.batch_status("b1")
    assert 10 <= before.total < 42

    summary, results = await run_batch(Backend(orchestrator), text)
    assert [r["line"] for r in results] == list(range(1, 61))
    assert summary["succeeded"] == 36 and summary["failed"] == 6 and summary["invalid"] == 12
    assert summary["reused"] >= 10
    tasks = [r for r in results if r["task_id"]]
    assert len({r["task_id"] for r in tasks}) == len(tasks) == 42
    assert all(r["attempts"] == 1 for r in tasks if r["status"] == "succeeded")
    after = await orchestrator.batch_status("b1")
    assert after.total == 42 and after.finished == 42  # no line made a second task


async def test_a_batch_id_reused_for_other_input_is_reported_not_mixed_up(orchestrator):
    backend = Backend(orchestrator)
    await run_batch(backend, b'{"description": "first", "agent_type": "sleeper"}\n')
    summary, (result,) = await run_batch(
        backend, b'{"description": "second", "agent_type": "sleeper"}\n')
    assert result["status"] == "invalid" and result["error"]["code"] == "batch_mismatch"
    assert summary["invalid"] == 1 and summary["tasks"] == 0


async def test_batch_status_is_per_tenant(orchestrator):
    await run_batch(Backend(orchestrator), b'{"description": "a", "agent_type": "sleeper"}\n')
    status = await orchestrator.batch_status("b1", tenant="default")
    assert status.counts[TaskStatus.SUCCEEDED.value] == 1
    with pytest.raises(NotFound):
        await orchestrator.batch_status("b1", tenant="someone-else")
    with pytest.raises(NotFound):
        await orchestrator.batch_status("never-ran")


class Restarting(Backend):
    """The orchestrator unavailable for the first call of each kind, as while Ray restarts
    it."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        super().__init__(orchestrator)
        self.refused: list[str] = []

    async def submit_many_async(self, requests):
        if "submit" not in self.refused:
            self.refused.append("submit")
            raise PlatformUnavailable("the orchestrator is not answering: restarting")
        return await super().submit_many_async(requests)

    async def wait_many_async(self, task_ids, timeout_s=None):
        if "wait" not in self.refused:
            self.refused.append("wait")
            raise PlatformUnavailable("the orchestrator is not answering: restarting")
        return await super().wait_many_async(task_ids, timeout_s)


async def test_a_restarting_orchestrator_is_waited_for(orchestrator, monkeypatch):
    monkeypatch.setattr(batch_runner, "UNAVAILABLE_RETRY_S", (0.01,))
    backend = Restarting(orchestrator)
    summary, results = await run_batch(
        backend, b'{"description": "a", "agent_type": "sleeper"}\n' * 3)
    assert backend.refused == ["submit", "wait"]
    assert summary["succeeded"] == 3 and [r["status"] for r in results] == ["succeeded"] * 3
