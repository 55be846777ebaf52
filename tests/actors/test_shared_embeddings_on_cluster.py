"""One process holds the embedding model: on the session's Ray cluster, with the router on, the
text_analysis and knowledge replicas encode through the router (`actors.shared_embedder`) and load
no model of their own, with the same results as a model of their own; a router restarted
under a running task costs that task nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray

from actors.agents.text_analysis import near_duplicates, similarity
from actors.config import PoolConfig
from actors.shared_embedder import ROUTER_NAME, RemoteEmbedder, text_encoder
from cluster.client import Client
from cluster.settings import Settings
from ml.config import RouterConfig
from ml.embeddings import Embedder, embedder
from ml.errors import EmbeddingModelUnavailable
from storage.messages import AgentContext, TaskStatus
from tests.support.platform import run_platform, wait_until

pytestmark = pytest.mark.cluster

TEXTS = ["The parcel arrived two days late and the box was crushed.",
         "My order came late, and the packaging was damaged.",
         "The hotel breakfast was excellent and the staff were kind.",
         "Quarterly revenue grew by eight percent."]


@pytest.fixture(scope="module")
def platform(ray_cluster: None, tmp_path_factory: Any) -> Iterator[Client]:
    yield from run_platform("postgresql", tmp_path_factory.mktemp("shared-embeddings"),
                            router=RouterConfig(),
                            pools={"text_analysis": PoolConfig(replicas=1),
                                   "knowledge": PoolConfig(replicas=1)})


def replica_pid(platform: Client, agent_type: str) -> int:
    pids = ray.get(platform.orchestrator.replica_pids.remote())
    return next(pid for name, pid in pids.items() if f":{agent_type}:" in name and pid)


def loads_the_model(pid: int) -> bool:
    """Whether process `pid` has loaded the embedding model (its weights file is mapped)."""
    return "model.safetensors" in Path(f"/proc/{pid}/maps").read_text()


def test_a_similarity_on_the_platform_equals_the_local_models(platform: Client) -> None:
    task = platform.wait(platform.submit("how similar are these reviews?", {
        "operation": "similarity", "texts": TEXTS}, agent_type="text_analysis"), 180)

    assert task.status is TaskStatus.SUCCEEDED, task.error
    local = similarity(TEXTS, embedder().encode)
    assert np.allclose(task.result["matrix"], local["matrix"], atol=1e-5, rtol=0)
    assert task.result["most_similar"] == local["most_similar"]
    remote = RemoteEmbedder(platform.config.namespace).encode(TEXTS)
    assert remote.dtype == np.float32
    assert np.abs(remote - embedder().encode(TEXTS)).max() <= 1e-5


def test_the_text_analysis_replica_loads_no_model_the_router_does(platform: Client) -> None:
    task = platform.wait(platform.submit("find the near-duplicates", {
        "operation": "near_duplicates", "texts": TEXTS, "threshold": 0.6},
        agent_type="text_analysis"), 180)

    assert task.status is TaskStatus.SUCCEEDED, task.error
    assert task.result["groups"] == near_duplicates(TEXTS, 0.6, embedder().encode)["groups"]
    assert not loads_the_model(replica_pid(platform, "text_analysis"))
    router = ray.get_actor(ROUTER_NAME, namespace=platform.config.namespace)
    assert loads_the_model(ray.get(router.pid.remote(), timeout=60))


def test_knowledge_ingests_and_searches_through_the_router(platform: Client) -> None:
    text = ("Refunds are paid within fourteen days of the request. "
            "Support answers on weekdays from nine to five. ") * 50
    added = platform.knowledge_add(text.encode(), name="policy.txt", collection="policies",
                                   tenant="acme")
    hits = platform.knowledge_search("how long do refunds take", collection="policies",
                                     tenant="acme")["hits"]

    assert added["chunks"] >= 1
    assert hits and hits[0]["document_name"] == "policy.txt"
    assert "fourteen days" in hits[0]["text"]
    assert not loads_the_model(replica_pid(platform, "knowledge"))


def test_a_router_restarted_under_a_running_task_costs_it_nothing(platform: Client) -> None:
    texts = [f"Ticket {n}: the customer in zone {n % 17} reports outage number {n}."
             for n in range(800)]
    task_id = platform.submit("find the near-duplicates", {
        "operation": "near_duplicates", "texts": texts, "threshold": 0.99},
        agent_type="text_analysis", timeout_s=300, max_attempts=5)
    wait_until(lambda: platform.get(task_id).status is TaskStatus.RUNNING, 120,
               what="the task to start")
    router = ray.get_actor(ROUTER_NAME, namespace=platform.config.namespace)
    old_pid = ray.get(router.pid.remote())
    ray.kill(router, no_restart=False)
    assert platform.get(task_id).status is TaskStatus.RUNNING

    task = platform.wait(task_id, 400)
    assert task.status is TaskStatus.SUCCEEDED, task.error
    assert task.result["count"] == 800
    expected = near_duplicates(texts, 0.99, embedder().encode)
    assert task.result["groups"] == expected["groups"]
    assert ray.get(router.pid.remote(), timeout=120) != old_pid


def test_replicas_keep_a_model_of_their_own_when_shared_embeddings_are_off(
        platform: Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("YMERA_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("YMERA_SHARED_EMBEDDINGS", "0")
    settings = Settings().agent_settings()
    namespace, url = platform.config.namespace, platform.config.database_url

    off = text_encoder(AgentContext("agent:text_analysis:9", namespace, url, settings))
    on = text_encoder(AgentContext("agent:text_analysis:9", namespace, url, {}))
    elsewhere = text_encoder(AgentContext("agent:text_analysis:9", "no-router-here", url, {}))

    assert settings["shared_embeddings"] is False
    assert isinstance(off, Embedder) and isinstance(elsewhere, Embedder)
    assert isinstance(on, RemoteEmbedder) and on.dimension == off.dimension == 384
    assert np.abs(on.encode(TEXTS[:1]) - off.encode(TEXTS[:1])).max() <= 1e-5


def test_without_a_router_encoding_gives_up_after_its_retry_period(ray_cluster: None) -> None:
    remote = RemoteEmbedder("no-router-here", retry_for_s=0.5)

    with pytest.raises(EmbeddingModelUnavailable, match="did not answer within 0.5s") as raised:
        remote.encode(TEXTS)
    assert raised.value.details["namespace"] == "no-router-here"
