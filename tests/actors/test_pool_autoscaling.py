"""Agent pools follow their backlog (without a cluster: the real orchestrator and pool
manager, replicas in this process): a backlog grows a pool up to its maximum, an idle pool
shrinks back after the idle period, a replica leaving the pool finishes what it runs first,
and an operator can pin a pool or change its bounds with clear errors for bad requests."""

from __future__ import annotations

import asyncio
import time

import pytest

from actors.config import AutoscaleConfig, PoolConfig
from storage.errors import InvalidRequest, NotFound
from storage.messages import AttemptOutcome, TaskRequest, TaskStatus
from tests.support.inprocess_platform import inprocess_orchestrator, restarted, vanish

IDLE_S = 1.0


def sample(orchestrator, name: str, **labels: str) -> float:
    return orchestrator.metrics.registry.get_sample_value(name, labels) or 0.0


async def eventually(predicate, timeout_s: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


def record_kills(orchestrator) -> list[int]:
    """What each killed replica was still running when it was stopped."""
    backend, in_flight_at_kill = orchestrator.test_backend, []
    kill = backend.kill

    def recording_kill(handle) -> None:
        in_flight_at_kill.append(handle.replica.in_flight)
        kill(handle)

    backend.kill = recording_kill
    return in_flight_at_kill


async def one_clean_attempt_each(orchestrator, ids: list[str]) -> None:
    for task in await orchestrator.wait_many(ids, 30):
        assert task.status is TaskStatus.SUCCEEDED, task
        assert [a.outcome for a in await orchestrator.attempts(task.id)] == [
            AttemptOutcome.SUCCEEDED]


async def test_a_backlog_grows_the_pool_to_its_maximum_and_idleness_shrinks_it(tmp_path):
    pools = {"sleeper": PoolConfig(min_replicas=1, max_replicas=4, target_backlog=2,
                                   concurrency=2)}
    async with inprocess_orchestrator(
            tmp_path, pools=pools, autoscale=AutoscaleConfig(downscale_delay_s=IDLE_S)
    ) as orchestrator:
        pool = orchestrator.pools.pools["sleeper"]
        killed = record_kills(orchestrator)
        assert (pool.desired, pool.live_count()) == (1, 1)

        ids = await orchestrator.submit_many(
            [TaskRequest(f"{i}", {"seconds": 0.3}, "sleeper") for i in range(40)])
        await eventually(lambda: pool.live_count() == 4, what="four live replicas")
        assert pool.desired == 4  # 40 tasks at 2 per replica want 20: capped at 4
        await orchestrator.wait_many(ids, 30)
        assert len(pool.replicas) == 4  # the idle period has only just begun

        await eventually(lambda: len(pool.replicas) == 1, what="the pool back at one")
        assert pool.desired == 1 and killed == [0, 0, 0]
        await one_clean_attempt_each(orchestrator, ids)
        replicas_used = {(await orchestrator.attempts(i))[0].replica for i in ids}
        assert len(replicas_used) == 4
        assert sample(orchestrator, "ymera_pool_scalings_total",
                      agent_type="sleeper", direction="up") >= 1
        assert sample(orchestrator, "ymera_pool_scalings_total",
                      agent_type="sleeper", direction="down") >= 1


async def test_a_pool_at_zero_wakes_for_a_task_and_sleeps_again(tmp_path):
    pools = {"sleeper": PoolConfig(min_replicas=0, max_replicas=2)}
    async with inprocess_orchestrator(
            tmp_path, pools=pools, autoscale=AutoscaleConfig(downscale_delay_s=IDLE_S)
    ) as orchestrator:
        pool = orchestrator.pools.pools["sleeper"]
        assert not pool.replicas

        task_id = await orchestrator.submit(TaskRequest("wake", {"echo": 1}, "sleeper"))
        assert (await orchestrator.wait(task_id, 10)).result["echo"] == 1
        await eventually(lambda: not pool.replicas, what="the pool back at zero")


async def test_scaling_down_during_work_interrupts_no_task(tmp_path):
    pools = {"sleeper": PoolConfig(replicas=4, concurrency=1)}
    async with inprocess_orchestrator(tmp_path, pools=pools) as orchestrator:
        pool = orchestrator.pools.pools["sleeper"]
        killed = record_kills(orchestrator)
        ids = await orchestrator.submit_many(
            [TaskRequest(f"{i}", {"seconds": 0.4}, "sleeper") for i in range(12)])
        await eventually(lambda: sum(r.in_flight for r in pool.replicas.values()) == 4,
                         what="every replica busy")

        snapshot = await orchestrator.scale("sleeper", 1)

        assert snapshot["desired"] == 1 and snapshot["draining"] == 3
        assert killed == []  # the three leaving are busy: they finish first
        await one_clean_attempt_each(orchestrator, ids)
        await eventually(lambda: len(pool.replicas) == 1, what="the drained replicas gone")
        assert killed == [0, 0, 0]
        survivor = next(iter(pool.replicas))
        late = [a[0].replica for a in [await orchestrator.attempts(i) for i in ids[4:]]]
        assert set(late) == {survivor}  # once draining, a replica took no new task


async def test_an_idle_replica_leaves_first_and_a_draining_one_is_taken_back(tmp_path):
    pools = {"sleeper": PoolConfig(replicas=3, concurrency=1)}
    async with inprocess_orchestrator(tmp_path, pools=pools) as orchestrator:
        pool = orchestrator.pools.pools["sleeper"]
        ids = await orchestrator.submit_many(
            [TaskRequest(f"{i}", {"seconds": 1}, "sleeper") for i in range(2)])
        await eventually(lambda: pool.running() == 2, what="two replicas busy")
        idle = next(r.name for r in pool.replicas.values() if r.in_flight == 0)

        shrunk = await orchestrator.scale("sleeper", 1)
        assert idle not in pool.replicas  # nothing to finish: stopped at once
        assert shrunk["draining"] == 1 and len(pool.replicas) == 2
        grown = await orchestrator.scale("sleeper", 2)

        assert grown["draining"] == 0 and len(pool.replicas) == 2
        assert pool.next_number == 3  # the draining replica came back: none was started
        await one_clean_attempt_each(orchestrator, ids)


async def test_operators_pin_a_pool_or_set_its_bounds(tmp_path):
    pools = {"sleeper": PoolConfig(replicas=1)}
    async with inprocess_orchestrator(tmp_path, pools=pools) as orchestrator:
        bounds = await orchestrator.scale("sleeper", min_replicas=0, max_replicas=3)
        assert (bounds["min_replicas"], bounds["max_replicas"], bounds["desired"]) == (0, 3, 1)

        raised = await orchestrator.scale("sleeper", min_replicas=2)
        assert (raised["min_replicas"], raised["max_replicas"], raised["desired"]) == (2, 3, 2)

        pinned = await orchestrator.scale("sleeper", 3)
        assert (pinned["min_replicas"], pinned["max_replicas"], pinned["desired"]) == (3, 3, 3)


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    (("sleeper", 2), {"max_replicas": 4}, "either replicas"),
    (("sleeper",), {}, "give replicas"),
    (("sleeper",), {"min_replicas": 5, "max_replicas": 2}, "min_replicas (5) is above"),
    (("sleeper",), {"min_replicas": 3}, "min_replicas (3) is above max_replicas (2)"),
    (("sleeper", -1), {}, "replicas must be an integer from 0 to 256"),
    (("sleeper",), {"max_replicas": 1000}, "max_replicas must be an integer"),
    (("sleeper", True), {}, "replicas must be an integer"),
    (("sleeper", 1), {"reset": True}, "give it alone"),
])
async def test_bad_scale_requests_say_why_and_change_nothing(tmp_path, args, kwargs, message):
    pools = {"sleeper": PoolConfig(min_replicas=1, max_replicas=2)}
    async with inprocess_orchestrator(tmp_path, pools=pools) as orchestrator:
        with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
            await orchestrator.scale(*args, **kwargs)
        pool = orchestrator.pools.pools["sleeper"]
        assert (pool.min_replicas, pool.max_replicas, pool.desired) == (1, 2, 1)
        assert pool.bounds_set_by == "config" and await orchestrator.pool_bounds.all() == {}


async def test_scaling_an_unknown_agent_type_is_not_found(tmp_path):
    async with inprocess_orchestrator(tmp_path) as orchestrator:
        with pytest.raises(NotFound, match="no agent type 'nope'"):
            await orchestrator.scale("nope", 1)


async def test_bounds_an_operator_set_outlive_the_orchestrator_until_reset(tmp_path):
    pools = {"sleeper": PoolConfig(replicas=1)}
    async with inprocess_orchestrator(tmp_path, pools=pools) as first:
        pinned = await first.scale("sleeper", 3)
        assert (pinned["desired"], pinned["bounds_set_by"]) == (3, "operator")
        await eventually(lambda: first.pools.pools["sleeper"].live_count() == 3,
                         what="three live replicas")
        names = set(first.pools.pools["sleeper"].replicas)

        second = await restarted(first)
        try:
            pool = second.pools.pools["sleeper"]
            assert (pool.min_replicas, pool.max_replicas, pool.bounds_set_by) == (
                3, 3, "operator")
            assert set(pool.replicas) == names  # re-attached, none stopped or started
            done = await second.wait(await second.submit(
                TaskRequest("after", {"seconds": 0}, "sleeper")), 10)
            assert done.status is TaskStatus.SUCCEEDED

            reset = await second.scale("sleeper", reset=True)
            assert (reset["min_replicas"], reset["max_replicas"], reset["desired"],
                    reset["bounds_set_by"]) == (1, 1, 1, "config")
            await eventually(lambda: len(pool.replicas) == 1, what="the pool back at one")
        finally:
            third = await restarted(second)
        try:
            pool = third.pools.pools["sleeper"]
            assert (pool.min_replicas, pool.max_replicas, pool.bounds_set_by) == (
                1, 1, "config")
        finally:
            await third.drain(5)
            await vanish(third)


async def test_a_restarted_orchestrator_keeps_the_replicas_its_pool_had_grown_to(tmp_path):
    pools = {"sleeper": PoolConfig(min_replicas=1, max_replicas=3, target_backlog=1)}
    async with inprocess_orchestrator(
            tmp_path, pools=pools, autoscale=AutoscaleConfig(downscale_delay_s=IDLE_S)
    ) as first:
        ids = await first.submit_many(
            [TaskRequest(f"{i}", {"seconds": 0.3}, "sleeper") for i in range(12)])
        await eventually(lambda: first.pools.pools["sleeper"].live_count() == 3,
                         what="three live replicas")
        grown = set(first.pools.pools["sleeper"].replicas)
        await first.wait_many(ids, 30)

        reborn = await restarted(first)
        try:
            pool = reborn.pools.pools["sleeper"]
            assert set(pool.replicas) == grown and pool.desired == 3
            assert pool.bounds_set_by == "config"
            await eventually(lambda: len(pool.replicas) == 1, what="the idle pool back at one")
        finally:
            await reborn.drain(5)
            await vanish(reborn)


@pytest.mark.parametrize(("fields", "message"), [
    ({"replicas": -1}, "replicas must be a number from 0 to 256, got -1"),
    ({"min_replicas": 3, "max_replicas": 2}, r"max_replicas \(2\) is below"),
    ({"target_backlog": 0}, "target_backlog must be a number from 1 to 100000"),
    ({"resources": {"ml": 0}}, "custom resource amount"),
])
def test_a_pool_config_out_of_range_is_refused_naming_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        PoolConfig(**fields)
