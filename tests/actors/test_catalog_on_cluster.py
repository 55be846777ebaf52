"""The whole agent catalog through the orchestrator on a real cluster: the seven built-in
agents and the example third-party agent, registered by its package's entry point."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from aiohttp import web

from actors.config import PoolConfig
from actors.registry import load_agent_types
from cluster.client import Client
from storage.errors import NotFound
from storage.messages import TaskStatus
from tests.support.platform import run_platform, wait_until

pytestmark = pytest.mark.cluster

BUILT_INS = {"calculator", "data_processor", "text_analysis", "validation", "learning",
             "monitoring", "communication"}
SECRET = "test-webhook-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def catalog(ray_cluster, tmp_path_factory) -> Iterator[Client]:
    pools = {name: PoolConfig(replicas=0) for name in ("sleeper", "flaky", "hanger")}
    pools.update({name: PoolConfig(replicas=1) for name in BUILT_INS | {"word_counter"}})
    settings = {"webhook_secret": SECRET, "webhook_allow_private_networks": True,
                "webhook_timeout_s": 2.0, "webhook_max_attempts": 3}
    yield from run_platform("postgresql", tmp_path_factory.mktemp("catalog"), pools=pools,
                            agent_settings=settings)


def run(client, description, payload, agent_type, tenant="default"):
    task = client.wait(client.submit(description, payload, agent_type=agent_type,
                                     tenant=tenant), 120)
    assert task.status is TaskStatus.SUCCEEDED, task.error
    return task.result


def test_every_built_in_and_the_entry_point_agent_is_registered():
    assert BUILT_INS | {"word_counter"} <= set(load_agent_types())


def test_text_analysis_uses_the_embedding_model(catalog):
    result = run(catalog, "how similar are these", {
        "operation": "similarity",
        "texts": ["The cat sat on the mat.", "A cat was sitting on the rug.",
                  "Quarterly revenue grew by four percent."]}, "text_analysis")
    matrix = result["matrix"] if "matrix" in result else result["similarities"]
    assert matrix[0][1] > matrix[0][2]


def test_validation_reports_schema_errors(catalog):
    result = run(catalog, "validate", {
        "operation": "schema", "schema": {"type": "object", "required": ["id"],
                                          "properties": {"id": {"type": "integer"}}},
        "records": [{"id": 1}, {"id": "two"}, {}]}, "validation")
    assert result["valid"] is False and result["error_count"] == 2


def test_learning_fits_and_predicts(catalog):
    rows = [{"x": x, "y": 2 * x + 1} for x in range(30)]
    result = run(catalog, "fit a regression", {"task": "regression", "rows": rows,
                                               "target": "y", "predict": [{"x": 100}]},
                 "learning")
    assert abs(result["predictions"][0] - 201) < 1


def test_monitoring_sees_the_pools(catalog):
    result = run(catalog, "how healthy are the agent pools?", {"topic": "pools"},
                 "monitoring")
    assert "communication" in json.dumps(result) and result["summary"]


def test_monitoring_answers_with_the_asking_tenants_figures_only(catalog):
    run(catalog, "what is 2 + 2", {"expression": "2 + 2"}, "calculator")  # the default tenant's

    own = run(catalog, "give me an overview", {"topic": "overview"}, "monitoring",
              tenant="monitored")
    platform = run(catalog, "give me an overview", {"topic": "overview"}, "monitoring")

    assert own["failures"]["finished"] == 0 and platform["failures"]["finished"] >= 1
    assert own["nodes"]["alive"] >= 1 and "node_id" not in json.dumps(own)
    assert '"pid"' not in json.dumps(own) and own["pools"]["pools"]


def test_an_inbox_message_stays_in_its_tenant(catalog):
    result = run(catalog, "tell the learning agent", {
        "to_agent": "learning", "message": {"canary": "zephyr"}}, "communication",
        tenant="acme")

    assert [m.id for m in catalog.inbox("learning", tenant="acme")["messages"]] == [
        result["message_id"]]
    assert result["message_id"] not in [m.id for m in catalog.inbox("learning")["messages"]]
    with pytest.raises(NotFound):
        catalog.ack(result["message_id"])  # the default tenant's ack finds nothing
    assert catalog.ack(result["message_id"], "acme").acked_at is not None


def test_communication_delivers_to_an_inbox_and_to_a_webhook(catalog):
    result = run(catalog, "tell the learning agent", {
        "to_agent": "learning", "message": {"retrain": True}}, "communication")
    inbox = catalog.inbox("learning")
    assert result["message_id"] in [m.id for m in inbox["messages"]]
    acked = catalog.ack(result["message_id"])
    assert acked.acked_at is not None
    assert result["message_id"] not in [m.id for m in catalog.inbox("learning")["messages"]]

    received = []
    with webhook_receiver(received, failures=1) as url:
        delivered = run(catalog, "post it", {"url": url, "message": {"hello": "world"}},
                        "communication")
    assert delivered["attempts"] == 2 and received == [{"hello": "world"}]


def test_third_party_agent_runs_through_the_orchestrator(catalog):
    result = run(catalog, "count the words", {"text": "one two two three three three"},
                 "word_counter")
    assert json.dumps(result).count("three") >= 1


class webhook_receiver:
    """A local HTTP server on 127.0.0.1 that fails `failures` times, then records bodies."""

    def __init__(self, received: list, failures: int) -> None:
        self.received, self.failures = received, failures
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()

    async def handle(self, request: web.Request) -> web.Response:
        if self.failures:
            self.failures -= 1
            return web.Response(status=500)
        self.received.append(json.loads(await request.read()))
        return web.Response(status=200)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def __enter__(self) -> str:
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.ready.wait(10)
        return f"http://127.0.0.1:{self.port}/hook"

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


# ------------------------------------------------------------------ the example workflows

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"
REPORT_ROWS = [{"region": "north", "sales": 120}, {"region": "south", "sales": 80},
               {"region": "north", "sales": 30}]


def submit_example(client: Client, name: str, run_input: dict, wait_s: float | None = 180):
    document = (EXAMPLES / f"{name}.yaml").read_text()
    return ray.get(client.orchestrator.submit_workflow.remote(document, run_input,
                                                              wait_s=wait_s), timeout=300)


def test_the_report_workflow_runs_every_agent_and_posts_the_total(catalog):
    received: list = []
    with webhook_receiver(received, failures=0) as url:
        detail = submit_example(catalog, "report", {
            "rows": REPORT_ROWS, "webhook_url": url,
            "notes": "Sales rose in the north. The south was flat. Margins held steady."})
    assert detail.run.status.value == "succeeded", detail.run.error
    assert len(received) == 1 and received[0]["total"] == 230
    assert {row["region"] for row in received[0]["by_region"]} == {"north", "south"}
    assert received[0]["summary"]


def test_the_fan_out_workflow_scores_every_review_in_order(catalog):
    reviews = [{"id": f"r{i}", "text": text} for i, text in enumerate(
        ["Great battery life, I love it.", "The screen broke after a week. Terrible.",
         "It works as described."] * 4)]
    detail = submit_example(catalog, "reviews_fanout", {"reviews": reviews})
    assert detail.run.status.value == "succeeded", detail.run.error
    steps = {s.step_id: s for s in detail.steps if s.map_index < 0}
    labels = [item["label"] for item in steps["sentiment"].output]
    assert len(labels) == 12 and labels[0] != labels[1]
    assert isinstance(steps["average"].output["value"], float)


def test_the_approval_workflow_waits_for_a_person_then_announces(catalog):
    rows = [{"size_m2": 40 + i * 5, "rooms": 1 + i % 4, "price": 100_000 + i * 9_000}
            for i in range(40)]
    received: list = []
    with webhook_receiver(received, failures=0) as url:
        waiting = submit_example(catalog, "model_approval",
                                 {"rows": rows, "target": "price", "webhook_url": url},
                                 wait_s=None)
        run_id = waiting.run.id
        wait_until(lambda: ray.get(catalog.orchestrator.get_run.remote(run_id)).run.status
                   .value == "waiting", 180, what="the run to wait for its approval")
        ray.get(catalog.orchestrator.decide.remote(run_id, "review", "approve", "user:ann",
                                                   "looks good"))
        done = ray.get(catalog.orchestrator.wait_run.remote(run_id, 120))
    assert done.run.status.value == "succeeded", done.run.error
    assert received[0]["event"] == "model_approved" and received[0]["approved_by"] == "user:ann"
