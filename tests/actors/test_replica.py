"""The replica's promises, without a cluster: every attempt comes back as a result, never an
exception; payload limits hold whatever the agent; a cancelled attempt says so."""

from __future__ import annotations

import asyncio

from actors.agents import BUILTIN_AGENTS
from actors.replica import AgentReplica
from storage.messages import AgentContext, AgentTask
from tests.support.agents import Flaky, Sleeper

CONTEXT = AgentContext("agent:test:0", "ymera-test", "sqlite://")


def task(payload, agent_type="calculator", timeout_s=5.0, task_id="t1", attempt=1):
    return AgentTask(task_id, attempt, agent_type, "d", payload, timeout_s)


async def test_oversized_payload_is_refused_before_the_agent_runs():
    for name, payload in [("calculator", {"expression": "1+1", "padding": "x" * 1_000_001}),
                          ("data_processor", {"operation": "summary",
                                              "csv": "a\n" + "1\n" * 600_000})]:
        replica = AgentReplica(BUILTIN_AGENTS[name], CONTEXT, max_payload_bytes=1_000_000)
        result = await replica.run(task(payload, name))
        assert not result.ok and result.error.code == "invalid_task_input"
        assert "at most 1000000" in result.error.message and not result.error.retryable


async def test_agent_errors_become_results_with_their_details():
    replica = AgentReplica(Flaky, CONTEXT, max_payload_bytes=10_000)
    transient = await replica.run(task({"succeed_on": 2}, "flaky"))
    assert transient.error.retryable and transient.error.code == "retryable_agent_error"
    bad = await replica.run(task({"bad": True}, "flaky"))
    assert not bad.error.retryable and bad.error.details == {"field": "bad"}


async def test_timeouts_and_cancellation_are_reported_per_attempt():
    replica = AgentReplica(Sleeper, CONTEXT, max_payload_bytes=10_000)
    slow = await replica.run(task({"seconds": 5}, "sleeper", timeout_s=0.05))
    assert slow.error.code == "timeout" and slow.error.retryable

    batch = asyncio.ensure_future(replica.run_many([
        task({"seconds": 5}, "sleeper", task_id="a"), task({"echo": 1}, "sleeper", task_id="b")]))
    await asyncio.sleep(0.05)
    assert await replica.cancel("a") and not await replica.cancel("zzz")
    cancelled, done = await batch
    assert cancelled.error.code == "cancelled" and not cancelled.error.retryable
    assert done.ok and done.result["echo"] == 1
    assert (await replica.health())["in_flight"] == 0
