"""Tasks that name no agent type, on a real cluster with the real router actor: routed to every
built-in type and run there; refused clearly when no type should take them; taught by feedback
that outlives the router; never lost when the router is killed mid-decision."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
import ray

from actors.config import PoolConfig
from actors.ray_backend import ROUTER_NAME
from cluster.client import Client
from ml.config import RouterConfig
from storage.messages import TaskRequest, TaskStatus
from tests.support.platform import run_platform, wait_until

pytestmark = pytest.mark.cluster

BUILT_INS = ("calculator", "data_processor", "text_analysis", "validation", "learning",
             "monitoring", "communication")
ROWS = [{"region": "north", "sales": 120}, {"region": "south", "sales": 80},
        {"region": "north", "sales": 30}]
CLEAR = [
    ("calculator", "What is 15% of 240?", {}),
    ("data_processor", "group these sales rows by region and total the sales per region",
     {"operation": "group_by", "rows": ROWS, "by": "region",
      "aggregates": {"total": {"column": "sales", "fn": "sum"}}}),
    ("text_analysis", "how similar in meaning are these sentences?",
     {"operation": "similarity", "texts": ["The cat sat on the mat.",
                                           "A cat was sitting on the rug."]}),
    ("validation", "validate these records against the JSON schema and list what is wrong",
     {"operation": "schema", "schema": {"type": "object", "required": ["id"]},
      "records": [{"id": 1}, {}]}),
    ("learning", "train a regression model on these rows and predict y for x = 100",
     {"task": "regression", "rows": [{"x": x, "y": 2 * x + 1} for x in range(30)],
      "target": "y", "predict": [{"x": 100}]}),
    ("monitoring", "how healthy are the agent pools right now?", {"topic": "pools"}),
    ("communication", "leave a message in the learning agent's inbox that new data arrived",
     {"to_agent": "learning", "message": {"retrain": True}}),
]


@pytest.fixture(scope="module")
def routed(ray_cluster, tmp_path_factory) -> Iterator[Client]:
    pools = {name: PoolConfig(replicas=0) for name in ("sleeper", "flaky", "hanger")}
    pools.update({name: PoolConfig(replicas=1) for name in BUILT_INS})
    yield from run_platform("postgresql", tmp_path_factory.mktemp("routed"), pools=pools,
                            router=RouterConfig(stats_interval_s=2.0))


def router_pid(client: Client) -> int:
    router = ray.get_actor(ROUTER_NAME, namespace=client.config.namespace)
    return ray.get(router.pid.remote(), timeout=120)


def test_the_router_and_the_ml_agents_take_ml_capacity(routed):
    # the router, one learning and one text_analysis replica ask for one unit each; the
    # calculator and data_processor replicas ask for none (the cluster advertises 8)
    wait_until(lambda: ray.available_resources().get("ml") == 8 - 3, 30,
               what="three units of ml in use")


def test_tasks_without_an_agent_type_reach_every_built_in_type_and_run(routed):
    ids = routed.submit_many([TaskRequest(description, payload)
                              for _, description, payload in CLEAR])
    tasks = routed.wait_many(ids, 180)

    for (expected, description, _), task in zip(CLEAR, tasks):
        assert task.agent_type == expected, (description, task.route)
        assert task.status is TaskStatus.SUCCEEDED, (description, task.error)
        assert task.route["method"] == "semantic" and task.route["routed"]
        assert task.route["candidates"][0][0] == expected
        assert task.route["nearest"] and task.route["reason"].startswith("semantic")


def test_a_task_no_agent_should_take_fails_clearly_without_running(routed):
    task = routed.wait(routed.submit("book me a flight to Lisbon next Tuesday"), 60)

    assert task.status is TaskStatus.FAILED and task.attempts == 0
    assert task.error.code == "no_confident_route"
    assert "naming an agent_type" in task.error.message
    assert task.error.details["candidates"] and task.route["routed"] is False


def test_a_confident_success_becomes_a_learned_example(routed):
    text = "work out 7 percent of 1,250 and round it to whole units"
    task = routed.wait(routed.submit(text), 60)
    assert task.status is TaskStatus.SUCCEEDED and task.agent_type == "calculator"

    router = ray.get_actor(ROUTER_NAME, namespace=routed.config.namespace)

    def learned() -> list[str]:
        return [e["text"] for e in ray.get(router.stored_examples.remote("calculator"))]

    if task.route["confidence"] >= RouterConfig().learn_min_confidence:
        wait_until(lambda: text in learned(), 30, what="the success to be learned")
    else:
        assert text not in learned()


def test_feedback_changes_later_decisions_and_survives_a_router_restart(routed):
    text = "tidy up the quarterly numbers for the board"
    first = routed.wait(routed.submit(text, {"topic": "pools"}), 60)
    assert first.agent_type != "monitoring"

    outcome = routed.feedback(first.id, "monitoring")
    second = routed.wait(routed.submit(text, {"topic": "pools"}), 60)

    assert outcome["added"] is True
    assert second.agent_type == "monitoring" and second.status is TaskStatus.SUCCEEDED
    assert second.route["nearest"][0]["source"] == "feedback"
    assert routed.events(first.id)[-1].kind == "feedback"
    other = routed.wait(routed.submit(text, {"topic": "pools"}, tenant="globex"), 60)
    assert other.agent_type == first.agent_type  # another tenant's feedback does not move it
    assert all(n["source"] == "declared" for n in other.route["nearest"])
    assert routed.route(text, "globex").agent_type == first.agent_type
    assert routed.router_state("globex")["examples"]["monitoring"].get("feedback") is None

    old_pid = router_pid(routed)
    os.kill(old_pid, signal.SIGKILL)
    third = routed.wait(routed.submit(text, {"topic": "pools"}), 180)

    assert router_pid(routed) != old_pid
    assert third.agent_type == "monitoring" and third.route["nearest"][0]["source"] == "feedback"
    assert routed.router_state()["examples"]["monitoring"]["feedback"] == 1


def test_a_router_killed_mid_decision_loses_no_task(routed):
    pid = router_pid(routed)
    ids = routed.submit_many([TaskRequest(f"what is {i} plus {i}?") for i in range(300)])
    os.kill(pid, signal.SIGKILL)

    tasks = routed.wait_many(ids, 240)

    failed = [(t.description, t.error, t.route) for t in tasks
              if t.status is not TaskStatus.SUCCEEDED]
    assert not failed, failed[:3]
    assert [t.result["value"] for t in tasks] == [2 * i for i in range(300)]
    assert {t.agent_type for t in tasks} == {"calculator"}
    assert router_pid(routed) != pid
