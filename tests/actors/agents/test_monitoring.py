"""The monitoring agent without Ray: reading questions, and shaping reports from given facts."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from actors.agent import Agent
from actors.agents.monitoring import (
    DEFAULT_WINDOW_S,
    TOPICS,
    Monitoring,
    Observation,
    Question,
    answer,
    describe_window,
    infer_topic,
    read_question,
)
from actors.errors import InvalidTaskInput, RetryableAgentError
from storage.messages import AgentTask

GIB = 1024**3


def replica(name: str, in_flight: int = 0) -> dict[str, Any]:
    return {"name": name, "ready": True, "in_flight": in_flight, "pid": 100, "completed": 7}


def status(**overrides: Any) -> dict[str, Any]:
    """What `Orchestrator.status()` answers, for a platform with two agent types."""
    value = {
        "accepting": True, "uptime_s": 120.0, "storage": "sqlite", "queue_max": 1000,
        "queued": {"calculator": 12, "data_processor": 0},
        "running": 5,
        "tasks": {"succeeded": 90, "failed": 4, "dead": 2, "queued": 12, "running": 5},
        "pools": [
            {"agent_type": "calculator", "desired": 2, "live": 2, "concurrency": 8,
             "restarts": 1, "replicas": [replica("agent:calculator:0", 3),
                                         replica("agent:calculator:2", 2)]},
            {"agent_type": "data_processor", "desired": 2, "live": 1, "concurrency": 8,
             "restarts": 0, "replicas": [replica("agent:data_processor:0")]},
        ],
        "agent_types": {"calculator": {}, "data_processor": {}},
    }
    return {**value, **overrides}


def stats() -> dict[str, dict[str, Any]]:
    """What `Orchestrator.agent_stats()` answers (see `TaskStore.agent_stats`)."""
    return {
        "calculator": {"succeeded": 95, "failed": 5, "dead": 0, "cancelled": 0, "finished": 100,
                       "success_rate": 0.95, "attempts": 104, "retried": 4, "lost": 1,
                       "timeouts": 2, "timed": 103, "duration_mean_s": 0.04,
                       "duration_p95_s": 0.12, "durations_capped": False},
        "data_processor": {"succeeded": 8, "failed": 0, "dead": 2, "cancelled": 0, "finished": 10,
                           "success_rate": 0.8, "attempts": 16, "retried": 6, "lost": 0,
                           "timeouts": 0, "timed": 16, "duration_mean_s": 1.5,
                           "duration_p95_s": 3.25, "durations_capped": False},
    }


NODES = [
    {"NodeID": "aaa", "Alive": True, "NodeManagerAddress": "10.0.0.1",
     "Resources": {"CPU": 4.0, "memory": 8 * GIB, "node:10.0.0.1": 1.0,
                   "node:__internal_head__": 1.0}},
    {"NodeID": "bbb", "Alive": False, "NodeManagerAddress": "10.0.0.2",
     "Resources": {"CPU": 4.0, "memory": 8 * GIB, "node:10.0.0.2": 1.0}},
]


def observation(**overrides: Any) -> Observation:
    values = dict(status=status(), stats=stats(), nodes=NODES,
                  task_counts={"succeeded": 9, "dead": 2, "queued": 1})
    values.update(overrides)
    return Observation(**values)


def ask(description: str = "", **payload: Any) -> dict[str, Any]:
    result = answer(read_question(payload, description), observation())
    json.dumps(result, allow_nan=False)  # every answer is plain JSON
    return result


def refusal(description: str = "", **payload: Any) -> InvalidTaskInput:
    with pytest.raises(InvalidTaskInput) as caught:
        ask(description, **payload)
    return caught.value


def test_spec_declares_what_the_router_learns_from():
    spec = Monitoring.spec
    assert issubclass(Monitoring, Agent) and spec.name == "monitoring"
    assert len(spec.capabilities) >= 6
    assert len(set(spec.examples)) == len(spec.examples) >= 15
    assert (spec.resources.num_cpus, spec.concurrency, spec.replicas) == (0.05, 8, 1)


@pytest.mark.parametrize("description, topic", [
    ("How many nodes are alive?", "nodes"),
    ("how much CPU is free", "nodes"),
    ("is memory running low", "nodes"),
    ("how many replicas does each agent have", "pools"),
    ("show me the pools", "pools"),
    ("is the calculator healthy?", "pools"),
    ("how long is the queue", "queues"),
    ("is there a backlog", "queues"),
    ("how many tasks are waiting", "queues"),
    ("which agents fail most", "failures"),
    ("any errors lately?", "failures"),
    ("how many dead tasks", "failures"),
    ("what is the success rate", "failures"),
    ("which agent is slowest", "latency"),
    ("what's the p95 latency", "latency"),
    ("average attempt duration", "latency"),
    ("how is everything", "overview"),
    ("", "overview"),
    ("failures and latency per agent", "overview"),  # several topics: the overview has both
])
def test_topic_from_the_words_of_the_description(description: str, topic: str):
    assert infer_topic(description) == topic


def test_every_spec_example_reads_as_a_question():
    for example in Monitoring.spec.examples:
        assert read_question({}, example).topic in TOPICS
        assert ask(example)["summary"]


def test_payload_topic_wins_over_the_description():
    assert read_question({"topic": "Latency "}, "how many nodes") == Question(
        "latency", None, DEFAULT_WINDOW_S, "how many nodes")
    assert read_question({}, "") == Question("overview")


@pytest.mark.parametrize("topic", ["cpu", "everything", "", 3, ["nodes"]])
def test_an_unknown_topic_is_refused_with_the_options(topic: Any):
    error = refusal(topic=topic)
    assert "unknown topic" in error.message and ", ".join(TOPICS) in error.message
    assert error.details == {"field": "topic", "accepted": list(TOPICS)}


@pytest.mark.parametrize("window_s", [59, 0, -1, 7 * 86400 + 1, True, "3600", float("nan"),
                                      [60]])
def test_a_window_out_of_range_is_refused(window_s: Any):
    error = refusal(topic="failures", window_s=window_s)
    assert "window_s" in error.message and "60 to 604800" in error.message
    assert error.details["field"] == "window_s"


def test_a_window_in_range_is_taken():
    assert read_question({"window_s": 60}).window_s == 60.0
    assert read_question({"window_s": 7 * 86400}).window_s == 604800.0
    assert ask(topic="failures", window_s=86400)["window_s"] == 86400.0


@pytest.mark.parametrize("description, window_s", [
    ("failures in the last 30 minutes", 1800.0), ("errors in the past hour", 3600.0),
    ("success rate over the last 2 days", 172800.0), ("slowest agent today", 86400.0),
    ("failures this week", 604800.0), ("failures in the last 5 weeks", 604800.0),
    ("errors in the last 0 minutes", 60.0), ("which agents fail", DEFAULT_WINDOW_S),
])
def test_a_window_from_the_description(description: str, window_s: float):
    assert read_question({}, description).window_s == window_s
    assert read_question({"window_s": 120}, description).window_s == 120.0  # the payload wins


def test_unknown_payload_keys_and_agent_types_are_refused_with_the_options():
    error = refusal(topics="nodes")
    assert "'topics'" in error.message and "topic, agent_type, window_s" in error.message
    error = refusal(topic="pools", agent_type="translator")
    assert "unknown agent_type 'translator'" in error.message
    assert error.details["accepted"] == ["calculator", "data_processor"]
    assert "must be a string" in refusal(agent_type=7).message


def test_nodes_report_counts_live_nodes_without_naming_them():
    report = ask(topic="nodes")

    assert report == {"topic": "nodes", "agent_type": None, "alive": 1, "nodes": 2,
                      "summary": "1 of 2 nodes alive. Node addresses and resources are shown "
                                 "to platform administrators only."}


def test_pools_report_names_the_pools_below_strength():
    report = ask("are the pools healthy?")

    assert report["topic"] == "pools" and report["healthy"] is False
    calculator, processor = report["pools"]
    assert (calculator["healthy"], calculator["in_flight"], calculator["restarts"]) == (True, 5, 1)
    assert (processor["healthy"], processor["live"], processor["desired"]) == (False, 1, 2)
    assert report["summary"] == ("1 of 2 pools below strength: data_processor 1/2 live. "
                                 "1 replica restart since the orchestrator started.")


def test_a_description_naming_one_agent_type_narrows_the_report():
    report = ask("is the calculator pool healthy?")

    assert report["agent_type"] == "calculator"
    assert [p["agent_type"] for p in report["pools"]] == ["calculator"]
    assert report["summary"].startswith("calculator is at strength with 2 of 2 replicas live")
    assert ask("how are the data processor replicas")["agent_type"] == "data_processor"
    assert ask("calculator or data_processor replicas")["agent_type"] is None


def test_queues_report_counts_waiting_and_running_tasks():
    report = ask(topic="queues")

    assert (report["queued"], report["running"], report["queue_max"]) == (12, 5, 1000)
    assert report["queues"][0] == {"agent_type": "calculator", "queued": 12, "in_flight": 5,
                                   "live_replicas": 2}
    assert report["summary"] == ("12 tasks waiting (calculator 12), 5 running; "
                                 "the queue is 1.2% full (1000 max).")
    narrowed = ask(topic="queues", agent_type="data_processor")
    assert narrowed["summary"] == "0 tasks waiting, 0 running."


def test_failures_report_puts_the_lowest_success_rate_first():
    report = ask("which agents fail the most?")

    assert report["topic"] == "failures" and report["window_s"] == DEFAULT_WINDOW_S
    assert [row["agent_type"] for row in report["agents"]] == ["data_processor", "calculator"]
    assert (report["finished"], report["succeeded"], report["dead"]) == (110, 103, 2)
    assert report["success_rate"] == pytest.approx(103 / 110)
    assert report["dead_letters"] == 2
    assert report["summary"] == (
        "In the last hour, 110 tasks finished and 93.6% succeeded (5 failed, 2 dead, "
        "0 cancelled); lowest: data_processor at 80.0%; 10 attempts ended in an error, "
        "timeout or loss.")


def test_failures_report_over_a_quiet_window():
    result = answer(Question("failures", window_s=7200), observation(stats={}))

    assert result["finished"] == 0 and result["success_rate"] is None
    assert result["agents"] == [] and result["summary"] == "No tasks finished in the last 2 hours."


def test_latency_report_puts_the_slowest_first():
    report = ask(topic="latency", window_s=86400)

    assert [row["agent_type"] for row in report["agents"]] == ["data_processor", "calculator"]
    assert report["agents"][1] == {"agent_type": "calculator", "attempts": 104, "timed": 103,
                                   "duration_mean_s": 0.04, "duration_p95_s": 0.12,
                                   "timeouts": 2, "lost": 1}
    assert report["summary"] == ("Slowest in the last day: data_processor p95 3.25 s, mean "
                                 "1.50 s over 16 attempts; 2 timed out.")
    only = ask(topic="latency", agent_type="calculator")
    assert only["summary"] == ("Attempt time in the last hour: calculator p95 120 ms, mean 40 ms "
                               "over 103 attempts; 2 timed out.")


def test_overview_has_every_part_and_one_sentence():
    report = ask("how is the platform doing")

    assert report["topic"] == "overview"
    assert {"platform", "nodes", "pools", "queues", "failures", "latency"} <= set(report)
    assert report["platform"] == {"accepting": True, "storage": "sqlite", "uptime_s": 120.0}
    assert report["summary"] == (
        "1 of 2 nodes alive; 1 of 2 pools at strength; 12 tasks waiting, 5 running; 93.6% of "
        "110 tasks finished in the last hour succeeded; slowest p95 3.25 s (data_processor).")
    draining = answer(Question("overview"), observation(status=status(accepting=False)))
    assert draining["summary"].startswith("The platform is draining")


def test_an_empty_platform_still_answers():
    quiet = observation(status=status(queued={}, running=0, pools=[], agent_types={}), stats={},
                        nodes=[], task_counts={})

    result = answer(Question("overview"), quiet)

    assert result["summary"] == ("0 of 0 nodes alive; 0 of 0 pools at strength; 0 tasks waiting, "
                                 "0 running; no tasks finished in the last hour; no attempts "
                                 "finished in the last hour.")
    assert answer(Question("pools"), quiet)["summary"] == "No agent pools are running."


@pytest.mark.parametrize("seconds, text", [(60, "minute"), (3600, "hour"), (7200, "2 hours"),
                                           (86400, "day"), (90, "90 seconds"),
                                           (1800, "30 minutes")])
def test_describe_window(seconds: float, text: str):
    assert describe_window(seconds) == text


class GivenFacts(Monitoring):
    """The agent with its one Ray-facing method replaced by given facts."""

    def __init__(self, facts: Observation) -> None:
        self.facts = facts
        self.asked: list[tuple[Question, str]] = []

    async def observe(self, question: Question, tenant: str) -> Observation:
        self.asked.append((question, tenant))
        return self.facts


def test_run_reads_the_task_and_answers_from_what_it_observed():
    agent = GivenFacts(observation())
    task = AgentTask(task_id="t", attempt=1, agent_type="monitoring",
                     description="Which agent type fails the most?",
                     payload={"window_s": 600}, timeout_s=10, tenant="acme")

    result = asyncio.run(agent.run(task))

    assert agent.asked == [(Question("failures", None, 600.0, task.description), "acme")]
    assert result["topic"] == "failures"
    assert result["summary"].startswith("In the last 10 minutes, 110 tasks finished")


def test_run_refuses_bad_input_before_observing():
    agent = GivenFacts(observation())
    task = AgentTask(task_id="t", attempt=1, agent_type="monitoring", description="status",
                     payload={"topic": "weather"}, timeout_s=10)

    with pytest.raises(InvalidTaskInput):
        asyncio.run(agent.run(task))
    assert agent.asked == []


class PlatformWideFacts:
    """A fake `ClusterFacts` port answering platform-wide facts: another tenant's 999 dead
    letters, replica pids and node ids."""

    def __init__(self) -> None:
        self.stats_calls: list[tuple[float, str]] = []
        self.counts_calls: list[str] = []

    async def status(self) -> dict[str, Any]:
        pools = [{**pool, "replicas": [{**r, "pid": 4242, "node_id": "f" * 56}
                                       for r in pool["replicas"]]}
                 for pool in status()["pools"]]
        return status(tasks={"dead": 999, "succeeded": 31337}, dead_letters=999, pools=pools,
                      metrics_address="10.0.0.1:9090")

    async def agent_stats(self, window_s: float, tenant: str) -> dict[str, dict[str, Any]]:
        self.stats_calls.append((window_s, tenant))
        return stats()

    async def task_counts(self, tenant: str) -> dict[str, int]:
        self.counts_calls.append(tenant)
        return {"dead": 2, "succeeded": 9}

    async def nodes(self) -> list[dict[str, Any]]:
        return NODES


def test_a_tenant_gets_its_own_figures_and_no_machine_or_process_details():
    facts = PlatformWideFacts()
    agent = Monitoring()
    agent.cluster = facts
    task = AgentTask(task_id="t", attempt=1, agent_type="monitoring",
                     description="give me an overview", payload={"window_s": 600},
                     timeout_s=10, tenant="acme")

    result = asyncio.run(agent.run(task))

    assert facts.stats_calls == [(600.0, "acme")]
    assert facts.counts_calls == ["acme"]
    assert result["failures"]["dead_letters"] == 2 and result["nodes"]["alive"] == 1
    shown = json.dumps(result)
    for secret in ("999", "31337", "4242", "f" * 56, "aaa", "bbb", "10.0.0.", "CPU", "memory"):
        assert secret not in shown, secret
    assert [p["live"] for p in result["pools"]["pools"]] == [2, 1]  # shared compute stays


def test_a_replica_without_cluster_facts_makes_the_attempt_retryable():
    task = AgentTask(task_id="t", attempt=1, agent_type="monitoring", description="nodes",
                     payload={"topic": "nodes"}, timeout_s=10)

    with pytest.raises(RetryableAgentError):
        asyncio.run(Monitoring().run(task))
