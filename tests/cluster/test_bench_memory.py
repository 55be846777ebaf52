"""`ymera bench memory`'s accounting: which actor is which, what its process holds, and the
totals the report compares with the goal. (A whole run starts every built-in pool, which takes
minutes on a small machine, so it is a benchmark to run by hand, not a test.)"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest

from actors.pools import replica_name
from cluster.bench.core import PeakSampler
from cluster.bench.memory import (
    ActorProcess, _check_same_cluster, _summary, platform_actors, process_memory,
    role_of, totals)


def test_each_actor_is_named_for_what_it_is_for():
    assert role_of("AgentReplica", replica_name("calculator", 3)) == "replica:calculator"
    assert role_of("AgentReplica", replica_name("text_analysis", 1)) == "replica:text_analysis"
    assert role_of("Orchestrator", "orchestrator") == "orchestrator"
    assert role_of("RouterService", "router") == "router"
    assert role_of("ServeReplica:ymera-api:ApiIngress", "") == "api replica"
    assert role_of("ServeController", "SERVE_CONTROLLER_ACTOR") == "serve controller"
    assert role_of("ProxyActor", "SERVE_PROXY_ACTOR-abc") == "serve proxy"
    assert role_of("SomethingNew", "") == "SomethingNew"


def test_only_live_actors_with_a_process_are_listed():
    listed = [
        SimpleNamespace(state="ALIVE", pid=11, class_name="AgentReplica",
                        name=replica_name("calculator", 1)),
        SimpleNamespace(state="DEAD", pid=12, class_name="AgentReplica",
                        name=replica_name("calculator", 2)),
        SimpleNamespace(state="ALIVE", pid=None, class_name="RouterService", name="router"),
        SimpleNamespace(state="ALIVE", pid=13, class_name="ServeReplica:ymera-api:ApiIngress",
                        name=None),
    ]
    actors = platform_actors(listed)
    assert [(a.role, a.name, a.pid) for a in actors] == [
        ("api replica", "ServeReplica:ymera-api:ApiIngress", 13),
        ("replica:calculator", replica_name("calculator", 1), 11)]


def test_totals_sum_each_role_and_count_serve_infrastructure_apart():
    processes = [
        {"role": "orchestrator", "rss_mb": 200.0},
        {"role": "replica:calculator", "rss_mb": 150.0},
        {"role": "replica:calculator", "rss_mb": 155.5},
        {"role": "api replica", "rss_mb": 230.0},
        {"role": "serve controller", "rss_mb": 120.0},
        {"role": "serve proxy", "rss_mb": 110.0},
        {"role": "router", "rss_mb": None},  # could not be read
    ]
    result = totals(processes, "rss_mb")
    assert result["by_role"]["replica:calculator"] == {"processes": 2, "rss_mb": 305.5}
    assert "router" not in result["by_role"]
    assert result["platform"] == 735.5
    assert result["with_serve"] == 965.5


def test_a_process_memory_reads_rss_and_the_shared_pages_counted_once():
    quick = process_memory(os.getpid(), full=False)
    assert set(quick) == {"rss_mb"} and quick["rss_mb"] > 10
    full = process_memory(os.getpid(), full=True)
    assert full["uss_mb"] is not None and full["pss_mb"] is not None
    assert 0 < full["uss_mb"] <= full["pss_mb"] <= full["rss_mb"] + 1


def test_the_sampler_keeps_each_process_peak_and_the_peak_of_the_sum():
    with PeakSampler([os.getpid()]) as sampler:
        held = bytearray(64 * 2**20)
        time.sleep(0.5)
    del held
    assert sampler.peaks[os.getpid()] >= 64
    assert sampler.total_peak >= sampler.peaks[os.getpid()]


def test_the_table_names_every_process_and_says_whether_the_goal_is_met():
    processes = [
        {"role": "orchestrator", "name": "orchestrator", "pid": 10, "rss_mb": 300.0,
         "uss_mb": 250.0, "pss_mb": 260.0, "peak_rss_under_load_mb": 320.0},
        {"role": "replica:calculator", "name": replica_name("calculator", 1), "pid": 11,
         "rss_mb": 1900.0, "uss_mb": 1800.0, "pss_mb": 1850.0, "peak_rss_under_load_mb": 2000.0},
    ]
    report = {
        "processes": processes,
        "idle": {"rss_mb": totals(processes, "rss_mb"), "pss_mb": totals(processes, "pss_mb")},
        "under_load": {"peak_rss_mb": totals(processes, "peak_rss_under_load_mb")},
        "goal": {"platform_rss_mb_at_most": 2048.0, "idle_rss_mb": 2200.0,
                 "peak_rss_mb": 2320.0, "met": False},
        "load": {"tasks": 100, "succeeded": 100, "seconds": 1.0},
    }
    table = _summary(report)
    assert f"replica:calculator ({replica_name('calculator', 1)})" in table
    assert "orchestrator" in table
    assert "missed" in table


def test_actors_of_another_cluster_are_refused_rather_than_counted():
    ours = [ActorProcess("orchestrator", "orchestrator", 1),
            ActorProcess("replica:calculator", replica_name("calculator", 0), 2),
            ActorProcess("replica:calculator", replica_name("calculator", 1), 3)]
    _check_same_cluster(ours, {"calculator": 2})
    with pytest.raises(RuntimeError, match="another cluster"):
        _check_same_cluster(ours[:2], {"calculator": 2, "knowledge": 1})
