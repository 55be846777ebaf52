"""Submissions made at the same time leave together in one orchestrator call, and each caller
still gets its own task or its own error."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from actors.accept_coalescer import AcceptCoalescer
from actors.errors import PlatformUnavailable
from storage.errors import InvalidRequest
from storage.messages import Task, TaskRequest, TaskStatus

NOW = datetime(2026, 12, 5, tzinfo=timezone.utc)


def _task(request: TaskRequest) -> Task:
    return Task(id=f"id-{request.description}", description=request.description,
                payload=request.payload, status=TaskStatus.QUEUED, agent_type=request.agent_type,
                tenant="default",
                priority=0, attempts=0, max_attempts=3, timeout_s=30.0, created_at=NOW,
                updated_at=NOW)


class Orchestrator:
    """Answers each call after a moment; a description starting with "bad" is refused."""

    def __init__(self, fail_with: BaseException | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_with = fail_with

    async def accept_each(self, requests):
        self.calls.append([r.description for r in requests])
        await asyncio.sleep(0.02)
        if self.fail_with is not None:
            raise self.fail_with
        return [InvalidRequest(f"{r.description} is refused", {"field": "description"})
                if r.description.startswith("bad") else _task(r) for r in requests]


async def test_one_caller_alone_is_sent_at_once_in_a_call_of_its_own() -> None:
    orchestrator = Orchestrator()
    coalescer = AcceptCoalescer(orchestrator.accept_each)
    task = await asyncio.wait_for(coalescer.accept(TaskRequest("a")), 1)
    assert task.id == "id-a"
    assert orchestrator.calls == [["a"]]


async def test_callers_arriving_together_share_calls_and_get_their_own_outcomes() -> None:
    orchestrator = Orchestrator()
    coalescer = AcceptCoalescer(orchestrator.accept_each, max_in_flight=2, max_batch=64)
    names = [f"t{i}" for i in range(20)] + ["bad-one"]
    outcomes = await asyncio.gather(*(coalescer.accept(TaskRequest(n)) for n in names),
                                    return_exceptions=True)
    assert [o.id for o in outcomes[:-1] if isinstance(o, Task)] == [f"id-t{i}" for i in range(20)]
    assert isinstance(outcomes[-1], InvalidRequest)
    assert "bad-one is refused" in str(outcomes[-1])
    # two go at once; the other 19 wait for a free slot and leave together
    assert orchestrator.calls == [["t0"], ["t1"], names[2:]]
    assert sorted(sum(orchestrator.calls, [])) == sorted(names)  # each sent exactly once


async def test_a_call_that_fails_as_a_whole_fails_each_of_its_requests() -> None:
    orchestrator = Orchestrator(PlatformUnavailable("the orchestrator is not answering"))
    coalescer = AcceptCoalescer(orchestrator.accept_each, max_in_flight=1)
    outcomes = await asyncio.gather(*(coalescer.accept(TaskRequest(f"t{i}")) for i in range(5)),
                                    return_exceptions=True)
    assert all(isinstance(o, PlatformUnavailable) for o in outcomes)
    orchestrator.fail_with = None  # it is back: the next submissions go through
    assert (await coalescer.accept(TaskRequest("later"))).id == "id-later"


async def test_batches_are_capped_and_a_caller_that_stops_waiting_harms_no_one() -> None:
    orchestrator = Orchestrator()
    coalescer = AcceptCoalescer(orchestrator.accept_each, max_in_flight=1, max_batch=3)
    first = asyncio.ensure_future(coalescer.accept(TaskRequest("first")))
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(coalescer.accept(TaskRequest(f"w{i}"))) for i in range(7)]
    await asyncio.sleep(0)
    waiting[0].cancel()
    results = await asyncio.gather(first, *waiting, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    assert [r.id for r in results[2:] if isinstance(r, Task)] == [f"id-w{i}" for i in range(1, 7)]
    assert [len(c) for c in orchestrator.calls] == [1, 3, 3, 1]


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        AcceptCoalescer(Orchestrator().accept_each, max_in_flight=0)
