"""Routing inside the orchestrator, without a cluster: tasks that name no agent type are stored
first, then routed; a failing router delays them and never loses them; a task no type should take
fails clearly (or goes to the fallback type). The router here is scripted, so each failure happens
exactly when the test says; the real router on a real cluster is in test_routing_on_cluster.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from actors.config import OrchestratorConfig, PoolConfig
from actors.errors import ReplicaLost
from actors.orchestrator import Orchestrator
from actors.retry import RetryPolicy
from ml.config import RouterConfig
from ml.errors import NoConfidentRoute
from storage.database import migrate_async
from storage.errors import Conflict, InvalidRequest
from storage.messages import Neighbour, RouteDecision, RouteMethod, TaskRequest, TaskStatus
from tests.support.inprocess_platform import vanish
from tests.support.agents import TEST_AGENT_PATHS
from tests.support.inprocess_backend import InProcessBackend


class ScriptedRouter:
    """Routes descriptions starting with "sleep" to the sleeper, rejects the rest, fails on
    "poison", and can be made to fail or wait on cue."""

    def __init__(self, agent_types, config, database_url) -> None:
        self.calls: list[list[str]] = []
        self.tenants: list[list[str]] = []
        self.lose_next = 0
        self.gate: asyncio.Event | None = None
        self.learned: list[tuple] = []
        self.feedback_calls: list[tuple] = []

    async def ready(self) -> dict:
        return {}

    async def decide_many(self, descriptions, load, tenants) -> list[RouteDecision]:
        self.calls.append(list(descriptions))
        self.tenants.append(list(tenants))
        assert set(load) >= {"sleeper", "flaky"}
        if self.gate is not None:
            await self.gate.wait()
        if self.lose_next:
            self.lose_next -= 1
            raise ReplicaLost("router lost")
        if any("poison" in d for d in descriptions):
            raise ValueError("cannot embed this text")
        return [self._decision(d) for d in descriptions]

    @staticmethod
    def _decision(description: str) -> RouteDecision:
        if description.startswith("sleep"):
            return RouteDecision("sleeper", 0.9, (("sleeper", 0.9), ("flaky", 0.1)),
                                 "semantic: like 'sleep a bit' (0.80)", RouteMethod.SEMANTIC,
                                 0.8, (Neighbour("sleep a bit", "sleeper", 0.8),))
        return RouteDecision("flaky", 0.6, (("flaky", 0.6), ("sleeper", 0.4)),
                             "no confident route: below 0.300", RouteMethod.SEMANTIC, 0.1,
                             (Neighbour("fail on cue", "flaky", 0.1),), routed=False)

    async def learn(self, outcomes) -> int:
        self.learned.extend(outcomes)
        return len(outcomes)

    async def feedback(self, description, agent_type, task_id, tenant) -> dict:
        self.feedback_calls.append((description, agent_type, task_id, tenant))
        return {"agent_type": agent_type, "added": True, "replaced": 0}

    async def describe(self, tenant) -> dict:
        return {"tenant": tenant, "examples": {"sleeper": {"declared": 1}}}


class Platform:
    def __init__(self, url: str) -> None:
        self.url = url
        self.backend = InProcessBackend(router_factory=ScriptedRouter)
        self.running: list[Orchestrator] = []

    async def start(self, **router: object) -> Orchestrator:
        config = OrchestratorConfig(
            database_url=self.url, agent_modules=TEST_AGENT_PATHS, default_replicas=0,
            pools={"sleeper": PoolConfig(replicas=2, concurrency=4)},
            health_interval_s=0.05, health_timeout_s=0.5,
            retry=RetryPolicy(max_attempts=2, backoff_base_s=0.01, backoff_max_s=0.05),
            router=RouterConfig(**router))
        orchestrator = Orchestrator(config, backend=self.backend)
        await asyncio.wait_for(orchestrator.ready(), 10)
        self.running.append(orchestrator)
        return orchestrator

    @property
    def router(self) -> ScriptedRouter:
        return self.backend.actors["router"].replica

    async def stop(self, orchestrator: Orchestrator) -> None:
        await orchestrator.lifecycle.writer.stop()
        await vanish(orchestrator)
        self.running.remove(orchestrator)


@pytest.fixture
async def platform(tmp_path) -> AsyncIterator[Platform]:
    url = f"sqlite:///{tmp_path}/ymera.db"
    await migrate_async(url)
    running = Platform(url)
    yield running
    for orchestrator in list(running.running):
        await running.stop(orchestrator)


async def test_a_task_without_a_type_is_stored_before_it_is_routed_then_runs(platform):
    orchestrator = await platform.start()
    platform.router.gate = asyncio.Event()

    task_id = await orchestrator.submit(TaskRequest("sleep a second", {"echo": 1}))
    waiting = await orchestrator.get(task_id)
    platform.router.gate.set()
    done = await orchestrator.wait(task_id, 10)

    assert waiting.status is TaskStatus.QUEUED and waiting.agent_type is None
    assert done.status is TaskStatus.SUCCEEDED and done.agent_type == "sleeper"
    assert done.route["method"] == "semantic" and done.route["routed"] is True
    assert done.route["candidates"][0] == ["sleeper", 0.9]
    assert done.route["nearest"][0]["text"] == "sleep a bit"
    kinds = [e.kind for e in await orchestrator.events(task_id)]
    assert kinds[:3] == ["queued", "routed", "started"] and kinds[-1] == "succeeded"


async def test_a_lost_router_delays_decisions_but_loses_no_task(platform):
    orchestrator = await platform.start()
    platform.router.lose_next = 2

    ids = await orchestrator.submit_many([TaskRequest(f"sleep {i}", {"echo": i})
                                          for i in range(5)])
    tasks = await orchestrator.wait_many(ids, 20)

    assert [t.status for t in tasks] == [TaskStatus.SUCCEEDED] * 5
    assert [t.result["echo"] for t in tasks] == list(range(5))
    assert len(platform.router.calls) >= 3
    assert [len(await orchestrator.attempts(t)) for t in ids] == [1] * 5


async def test_a_task_the_router_fails_on_fails_alone_and_the_rest_of_its_batch_runs(platform):
    orchestrator = await platform.start()
    platform.router.gate = asyncio.Event()
    ids = await orchestrator.submit_many([
        TaskRequest("sleep first"), TaskRequest("poison pill"), TaskRequest("sleep last")])
    platform.router.gate.set()

    first, poisoned, last = await orchestrator.wait_many(ids, 20)

    assert first.status is TaskStatus.SUCCEEDED and last.status is TaskStatus.SUCCEEDED
    assert poisoned.status is TaskStatus.FAILED and poisoned.error.code == "router_error"
    assert "cannot embed this text" in poisoned.error.message
    assert poisoned.attempts == 0 and await orchestrator.attempts(poisoned.id) == []


async def test_no_confident_route_fails_the_task_with_the_candidates(platform):
    orchestrator = await platform.start()

    task_id = await orchestrator.submit(TaskRequest("book me a flight to Lisbon"))
    task = await orchestrator.wait(task_id, 10)

    assert task.status is TaskStatus.FAILED and task.attempts == 0
    assert task.error.code == "no_confident_route"
    assert "naming an agent_type" in task.error.message
    assert task.error.details["candidates"] == [["flaky", 0.6], ["sleeper", 0.4]]
    assert task.route["routed"] is False and task.agent_type is None


async def test_a_fallback_type_takes_what_no_type_is_confident_about(platform):
    orchestrator = await platform.start(fallback_agent_type="sleeper")

    task = await orchestrator.wait(
        await orchestrator.submit(TaskRequest("book me a flight to Lisbon")), 10)

    assert task.status is TaskStatus.SUCCEEDED and task.agent_type == "sleeper"
    assert task.route["method"] == "fallback" and task.route["reason"].startswith(
        "fallback to sleeper: no confident route")


async def test_an_unregistered_fallback_type_is_refused_at_start(platform):
    with pytest.raises(InvalidRequest, match="fallback agent type 'translator'"):
        await platform.start(fallback_agent_type="translator")


async def test_cancelling_a_task_that_waits_for_its_route(platform):
    orchestrator = await platform.start()
    platform.router.gate = asyncio.Event()
    deciding = await orchestrator.submit(TaskRequest("sleep while decided"))
    while not orchestrator.routing.deciding:
        await asyncio.sleep(0.01)
    waiting = await orchestrator.submit(TaskRequest("sleep in line"))

    in_line = await orchestrator.cancel(waiting)
    cancel = asyncio.ensure_future(orchestrator.cancel(deciding))
    await asyncio.sleep(0.05)
    platform.router.gate.set()
    mid_decision = await cancel

    assert in_line.status is TaskStatus.CANCELLED
    assert mid_decision.status is TaskStatus.CANCELLED and mid_decision.attempts == 0


async def test_tasks_waiting_for_a_route_are_routed_after_an_orchestrator_restart(platform):
    first = await platform.start()
    platform.router.gate = asyncio.Event()
    ids = await first.submit_many([TaskRequest(f"sleep {i}", {"echo": i}) for i in range(3)])
    await platform.stop(first)  # gone before any decision came back
    platform.router.gate.set()

    second = await platform.start()
    tasks = await second.wait_many(ids, 20)

    assert [t.status for t in tasks] == [TaskStatus.SUCCEEDED] * 3
    assert [len(await second.attempts(t)) for t in ids] == [1] * 3


async def test_confident_successes_are_reported_to_the_router_with_their_tenant(platform):
    orchestrator = await platform.start()

    routed = await orchestrator.submit(TaskRequest("sleep and succeed", tenant="acme"))
    named = await orchestrator.submit(TaskRequest("sleep, named", agent_type="sleeper"))
    await orchestrator.wait_many([routed, named], 10)
    for _ in range(50):
        if platform.router.learned:
            break
        await asyncio.sleep(0.1)

    assert platform.router.learned == [(routed, "sleep and succeed", "sleeper", 0.9, "acme")]


async def test_each_task_waiting_for_a_route_is_decided_for_its_own_tenant(platform):
    orchestrator = await platform.start()
    platform.router.gate = asyncio.Event()
    ids = [await orchestrator.submit(TaskRequest(f"sleep {i}", {}, tenant=tenant))
           for i, tenant in enumerate(["acme", "globex", "acme"])]
    platform.router.gate.set()
    await orchestrator.wait_many(ids, 10)

    decided = {d: t for calls, tenants in zip(platform.router.calls, platform.router.tenants)
               for d, t in zip(calls, tenants)}
    assert decided == {"sleep 0": "acme", "sleep 1": "globex", "sleep 2": "acme"}


async def test_feedback_reaches_the_router_for_the_tasks_tenant_and_is_noted(platform):
    orchestrator = await platform.start()
    task_id = await orchestrator.submit(TaskRequest("sleep please", agent_type="sleeper",
                                                    tenant="acme"))
    await orchestrator.wait(task_id, 10)

    outcome = await orchestrator.feedback(task_id, "flaky")
    with pytest.raises(InvalidRequest, match="unknown agent_type 'translator'"):
        await orchestrator.feedback(task_id, "translator")
    events = await orchestrator.events(task_id)

    assert outcome == {"agent_type": "flaky", "added": True, "replaced": 0}
    assert platform.router.feedback_calls == [("sleep please", "flaky", task_id, "acme")]
    assert events[-1].kind == "feedback" and events[-1].data["routed_to"] == "sleeper"
    state = await orchestrator.router_state("acme")
    assert state["waiting"] == 0 and state["tenant"] == "acme"


async def test_a_route_preview_runs_nothing_and_is_decided_for_the_callers_tenant(platform):
    orchestrator = await platform.start()

    decision = await orchestrator.route("sleep on it", "acme")

    assert decision.agent_type == "sleeper" and decision.routed
    assert platform.router.tenants[-1] == ["acme"]
    assert (await orchestrator.list_tasks()).tasks == []
    with pytest.raises(InvalidRequest, match="non-empty"):
        await orchestrator.route("  ")
    with pytest.raises(InvalidRequest, match="tenant"):
        await orchestrator.route("sleep on it", "")


async def test_with_routing_off_a_task_must_name_its_type(platform):
    orchestrator = await platform.start(enabled=False)

    with pytest.raises(NoConfidentRoute, match="task 1: this task names no agent_type"):
        await orchestrator.submit_many([TaskRequest("sleep", agent_type="sleeper"),
                                        TaskRequest("sleep")])
    with pytest.raises(Conflict, match="routing is switched off"):
        await orchestrator.feedback("0" * 32, "sleeper")

    with pytest.raises(Conflict, match="routing is switched off"):
        await orchestrator.route("sleep")
    assert (await orchestrator.list_tasks()).tasks == []
    assert "router" not in platform.backend.actors
