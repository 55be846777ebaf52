"""A platform whose model is a fake OpenAI-compatible server, for tests on the session cluster.

    server = fixture(fake_openai)                         # module-scoped, answering from a thread
    platform = llm_platform(tmp_path_factory, server, "plan", router=RouterConfig())

The one deployment is `primary` in the group `chat`, with one attempt per call (a scripted
fault is seen at once, not retried into the next scripted step), at `prices` if given."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cluster.client import Client
from ml.llm.config import LlmConfig
from ml.llm.resilience import RetryPolicy
from ml.llm.settings import LlmSettings
from tests.support.fake_llm import FakeOpenAI, serving_in_thread
from tests.support.platform import run_platform


def fake_openai() -> Iterator[FakeOpenAI]:
    with serving_in_thread(FakeOpenAI()) as fake:
        yield fake  # type: ignore[misc]


def llm_platform(tmp_path_factory: Any, server: FakeOpenAI, name: str,
                 prices: dict[str, float] | None = None, **overrides: Any) -> Iterator[Client]:
    config = LlmConfig.from_dict({"deployments": [
        {"name": "primary", "group": "chat", "provider": "openai", "base_url": server.base_url,
         "model": "fake-model", **(prices or {})}]})
    settings = LlmSettings(config, retry=RetryPolicy(attempts=1))
    yield from run_platform("sqlite", tmp_path_factory.mktemp(name), llm=settings, **overrides)
