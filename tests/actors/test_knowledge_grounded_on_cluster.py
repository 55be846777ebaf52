"""Grounded knowledge answers on the session's Ray cluster, with a model configured (a fake
OpenAI-compatible endpoint): the replica learns a model is configured, asks the gateway with
the best chunks numbered, keeps only citations of given chunks, falls back to the extractive
answer when the model cites none, and never calls the model when retrieval is not confident."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.config import PoolConfig
from cluster.client import Client
from ml.knowledge.answer import NOT_FOUND
from ml.llm.config import LlmConfig
from ml.llm.resilience import RetryPolicy
from ml.llm.settings import LlmSettings
from tests.support.fake_llm import FakeOpenAI, Reply, serving_in_thread
from tests.support.platform import run_platform

pytestmark = pytest.mark.cluster

CORPUS = Path(__file__).resolve().parents[1] / "data" / "knowledge_corpus"
QUESTION = "How long do customers have to ask for a refund?"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with serving_in_thread(FakeOpenAI()) as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture(scope="module")
def platform(ray_cluster: None, server: FakeOpenAI, tmp_path_factory: Any) -> Iterator[Client]:
    config = LlmConfig.from_dict({"deployments": [
        {"name": "primary", "group": "chat", "provider": "openai", "base_url": server.base_url,
         "model": "fake-model"}]})
    for client in run_platform("sqlite", tmp_path_factory.mktemp("grounded"),
                               llm=LlmSettings(config, retry=RetryPolicy(attempts=1)),
                               pools={"knowledge": PoolConfig(replicas=1)}):
        for name in ("refunds.md", "shipping.md", "security.md"):
            client.knowledge_add(CORPUS / name, collection="handbook", tenant="acme")
        yield client


def test_a_grounded_answer_cites_only_the_chunks_it_was_given(platform: Client,
                                                              server: FakeOpenAI) -> None:
    server.script([Reply("Customers can ask within 30 days of delivery [1] [12].",
                         usage=(300, 20))])
    answer = platform.knowledge_answer(QUESTION, collection="handbook", tenant="acme")
    assert answer["mode"] == "grounded" and answer["found"], answer
    assert answer["answer"] == "Customers can ask within 30 days of delivery [1]."
    assert [c["number"] for c in answer["citations"]] == [1]
    assert answer["citations"][0]["document_name"] == "refunds.md"
    prompt = server.requests[-1].body["messages"][1]["content"]
    assert "[1] (from refunds.md)" in prompt and QUESTION in prompt


def test_an_answer_citing_nothing_is_refused_for_the_extractive_one(platform: Client,
                                                                    server: FakeOpenAI) -> None:
    server.script([Reply("Refunds are always generous.")])
    answer = platform.knowledge_answer(QUESTION, collection="handbook", tenant="acme")
    assert answer["mode"] == "extractive" and "refused" in answer["note"]
    assert answer["found"] and answer["citations"] and "[1]" in answer["answer"]


def test_a_question_the_collection_cannot_answer_never_reaches_the_model(
        platform: Client, server: FakeOpenAI) -> None:
    before = len(server.requests)
    answer = platform.knowledge_answer("Who won the 1998 football world cup?",
                                       collection="handbook", tenant="acme")
    assert answer["answer"] == NOT_FOUND and not answer["found"] and answer["calls"] == 0
    assert len(server.requests) == before
