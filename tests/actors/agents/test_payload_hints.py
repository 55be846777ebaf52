"""Every built-in agent's payload hint (the example the workflow planner shows a model) is a
payload that agent accepts: run in process on its own hint, each answers without refusing it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from actors.agent import Agent
from actors.agents import BUILTIN_AGENTS
from actors.agents.communication import Communication
from storage.database import migrate_async
from storage.messages import AgentContext, AgentSpec, AgentTask
from tests.actors.agents.test_monitoring import GivenFacts, observation
from tests.support.databases import fresh_sqlite_url

DETERMINISTIC = ("calculator", "data_processor", "text_analysis", "validation", "learning",
                 "monitoring", "communication")
"""The built-in agent types that run without a model (the `llm` type needs a gateway)."""


def test_every_built_in_agent_gives_a_json_object_hint() -> None:
    for name in DETERMINISTIC:
        hint = BUILTIN_AGENTS[name].spec.payload_hint
        assert isinstance(hint, dict) and hint, f"{name} declares no payload hint"
        assert json.loads(json.dumps(hint, allow_nan=False)) == hint


def test_a_spec_without_a_hint_still_works() -> None:
    spec = AgentSpec(name="third_party", description="d", capabilities=("c",), examples=("e",))
    assert spec.payload_hint is None


async def _agent(name: str, tmp_path: Path) -> Agent:
    if name == "monitoring":
        return GivenFacts(observation())
    agent: Agent = BUILTIN_AGENTS[name]()
    if isinstance(agent, Communication):
        url = fresh_sqlite_url(tmp_path)
        await migrate_async(url)
        agent.context = AgentContext(replica="agent:communication:0", namespace="t",
                                     database_url=url, settings={})
        await agent.setup()
    return agent


@pytest.mark.parametrize("name", DETERMINISTIC)
async def test_each_agent_accepts_its_own_hint(name: str, tmp_path: Path) -> None:
    agent = await _agent(name, tmp_path)
    hint: dict[str, Any] = BUILTIN_AGENTS[name].spec.payload_hint
    task = AgentTask(task_id="f" * 32, attempt=1, agent_type=name, description="",
                     payload=hint, timeout_s=60)
    try:
        result = await agent.run(task)  # InvalidTaskInput would fail the test here
    finally:
        if isinstance(agent, Communication):
            await agent.close()
    assert result, f"{name} answered nothing for its hint"
    json.dumps(result, allow_nan=False)
