"""The fault schedule: the same seed gives the same faults, every requested kind lands at least
once inside the fault window, and bad requests are refused with the reason."""

from __future__ import annotations

import pytest

from cluster.chaos.faults import ALL_KINDS, NODE_KINDS, replica_pool, schedule
from cluster.chaos.harness import ChaosOptions


def test_same_seed_same_schedule_other_seed_other_order() -> None:
    first = schedule(1, 120, ALL_KINDS)
    assert first == schedule(1, 120, ALL_KINDS)
    assert [k for _, k in first] != [k for _, k in schedule(2, 120, ALL_KINDS)]


@pytest.mark.parametrize("duration", [60, 120, 1800])
def test_every_kind_at_least_once_within_the_window(duration: float) -> None:
    plan = schedule(7, duration, ALL_KINDS, first_at_s=5, quiet_tail_s=10)
    assert set(ALL_KINDS) <= {kind for _, kind in plan}
    offsets = [offset for offset, _ in plan]
    assert offsets == sorted(offsets)
    assert all(5 <= offset <= duration - 10 for offset in offsets)


def test_a_long_run_draws_more_faults_than_kinds() -> None:
    assert len(schedule(1, 1800, ALL_KINDS)) > 10 * len(ALL_KINDS)


def test_unknown_kind_and_too_short_runs_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault kinds \\['disk_full'\\]"):
        schedule(1, 120, ("orchestrator_kill", "disk_full"))
    with pytest.raises(ValueError, match="leaves no time"):
        schedule(1, 12, ("orchestrator_kill",))


def test_worker_node_removal_is_a_kind_of_every_default_run() -> None:
    assert "worker_node_removal" in NODE_KINDS and set(NODE_KINDS) <= set(ALL_KINDS)
    assert "worker_node_removal" in ChaosOptions().fault_kinds()
    assert "worker_node_removal" in ChaosOptions(api=False).fault_kinds()
    plan = schedule(3, 75, ("agent_replica_kill", "worker_node_removal"))
    assert "worker_node_removal" in {kind for _, kind in plan}


def test_a_replica_name_gives_its_pool_and_anything_else_is_refused() -> None:
    assert replica_pool("agent:data_processor:12") == "data_processor"
    for bad in ("ProxyActor", "agent::3", "agent:calculator", "router:x:1"):
        with pytest.raises(ValueError, match="not an agent replica's name"):
            replica_pool(bad)
