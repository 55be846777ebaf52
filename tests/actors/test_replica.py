"""The replica's promises, without a cluster: every attempt comes back as a result, never an
exception; payload limits hold whatever the agent; a cancelled attempt says so; every result
carries the CPU time its attempt used; what an agent logs names its attempt."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging

import pytest

from actors.agents import BUILTIN_AGENTS
from actors.replica import AgentReplica
from storage.messages import AgentContext, AgentTask
from tests.support.agents import Flaky, Sleeper

CONTEXT = AgentContext("agent:test:0", "ymera-test", "sqlite://")
pytestmark = pytest.mark.usefixtures("gc_paused")

BURN_S = 0.2
TOLERANCE_S = 0.08


def task(payload, agent_type="calculator", timeout_s=5.0, task_id="t1", attempt=1,
         tenant="default"):
    return AgentTask(task_id, attempt, agent_type, "d", payload, timeout_s, tenant)


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


async def test_each_concurrent_attempt_is_charged_its_own_cpu_time():
    replica = AgentReplica(Sleeper, CONTEXT, max_payload_bytes=10_000)

    busy, idle = await replica.run_many([
        task({"burn_s": BURN_S}, "sleeper", task_id="busy"),
        task({"seconds": BURN_S}, "sleeper", task_id="idle")])

    assert busy.ok and idle.ok
    assert busy.cpu_s == pytest.approx(BURN_S, abs=TOLERANCE_S)
    assert idle.cpu_s < 0.02
    assert idle.duration_s >= BURN_S


async def test_attempts_that_fail_still_report_the_cpu_they_used():
    replica = AgentReplica(Sleeper, CONTEXT, max_payload_bytes=10_000)
    timed_out = await replica.run(
        task({"burn_s": BURN_S, "seconds": 5}, "sleeper", timeout_s=BURN_S + 0.3))
    assert timed_out.error.code == "timeout"
    assert timed_out.cpu_s == pytest.approx(BURN_S, abs=TOLERANCE_S)

    running = asyncio.ensure_future(
        replica.run(task({"burn_s": BURN_S, "seconds": 5}, "sleeper", task_id="c")))
    await asyncio.sleep(BURN_S + 0.1)
    assert await replica.cancel("c")
    cancelled = await running
    assert cancelled.error.code == "cancelled"
    assert cancelled.cpu_s == pytest.approx(BURN_S, abs=TOLERANCE_S)

    refused = await AgentReplica(Flaky, CONTEXT, max_payload_bytes=10_000).run(
        task({"bad": True}, "flaky"))
    assert not refused.ok and 0.0 <= refused.cpu_s < 0.05


async def test_what_an_agent_logs_names_its_attempt(capsys):
    context = dataclasses.replace(CONTEXT, log_format="json", log_level="INFO")
    replica = AgentReplica(Sleeper, context, max_payload_bytes=10_000)

    await replica.run_many([
        task({"log": "from a"}, "sleeper", task_id="a", attempt=2, tenant="acme"),
        task({"log": "from b"}, "sleeper", task_id="b")])
    logging.getLogger("tests.sleeper").info("between attempts")

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()
             if line.startswith("{")]
    by_message = {line["message"]: line for line in lines}
    assert {k: by_message["from a"].get(k) for k in
            ("task_id", "attempt", "agent_type", "tenant", "replica")} == {
        "task_id": "a", "attempt": 2, "agent_type": "sleeper", "tenant": "acme",
        "replica": "agent:test:0"}
    assert (by_message["from b"]["task_id"], by_message["from b"]["tenant"]) == ("b", "default")
    assert "task_id" not in by_message["between attempts"]


@pytest.mark.parametrize("levels", [65, 300, 2000])
async def test_a_result_nested_too_deep_fails_the_attempt_for_good(levels):
    replica = AgentReplica(Sleeper, CONTEXT, max_payload_bytes=10_000)
    result = await replica.run(task({"nest": levels}, "sleeper"))
    assert not result.ok and result.result is None
    assert result.error.code == "invalid_result" and not result.error.retryable
    assert "nested deeper than 64 levels at result.nested.n.n" in result.error.message
    context = dataclasses.replace(CONTEXT, max_result_depth=10)
    shallow = await AgentReplica(Sleeper, context, 10_000).run(task({"nest": 8}, "sleeper"))
    assert shallow.ok and shallow.result["nested"]["n"]["n"]


class OneNodeCluster:
    """A fake `ClusterFacts` port: one live node, nothing queued, one tenant's counts."""

    async def status(self):
        return {"accepting": True, "queue_max": 100, "queued": {}, "running": 0, "pools": [],
                "agent_types": {"monitoring": {}}}

    async def agent_stats(self, window_s, tenant):
        return {}

    async def task_counts(self, tenant):
        return {"succeeded": 3} if tenant == "acme" else {}

    async def nodes(self):
        return [{"Alive": True, "NodeID": "n1"}]


async def test_the_replica_gives_its_agent_the_cluster_facts_port():
    replica = AgentReplica(BUILTIN_AGENTS["monitoring"], CONTEXT, max_payload_bytes=10_000,
                           cluster=OneNodeCluster())

    result = await replica.run(task({"topic": "nodes"}, "monitoring", tenant="acme"))

    assert result.ok and result.result["alive"] == 1, result


async def test_outside_ray_an_agent_without_a_port_is_retried_not_crashed(monkeypatch):
    # outside Ray even when an earlier test of this session connected this process to a cluster
    monkeypatch.setattr("actors.replica._ray_node_id", lambda: None)
    replica = AgentReplica(BUILTIN_AGENTS["monitoring"], CONTEXT, max_payload_bytes=10_000)

    result = await replica.run(task({"topic": "nodes"}, "monitoring"))

    assert replica.agent.cluster is None
    assert not result.ok and result.error.code == "retryable_agent_error"
