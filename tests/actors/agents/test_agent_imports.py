"""A replica process imports its own agent's module (the agent class is sent by reference), so
naming one built-in agent must load no other agent and no heavy library it does not use: the
models stay in the router's process, HTTP clients and SQL in the agents that use them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
HEAVY = ("torch", "sentence_transformers", "transformers", "sklearn", "faiss")


def loaded_after(module: str) -> set[str]:
    check = f"import sys, actors.replica, {module}; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


@pytest.mark.parametrize("agent", ["calculator", "data_processor", "text_analysis",
                                   "validation", "learning", "monitoring"])
def test_an_agent_module_loads_no_other_agent_and_no_model(agent: str) -> None:
    loaded = loaded_after(f"actors.agents.{agent}")

    assert not {"actors.agents.communication", "actors.agents.knowledge"} & loaded
    assert not {"aiohttp", "sqlalchemy"} & loaded
    assert not set(HEAVY) & loaded


def test_the_agents_package_loads_no_agent_until_one_is_named() -> None:
    loaded = loaded_after("actors.agents")
    agents = {name for name in loaded if name.startswith("actors.agents.")}

    assert agents == set()
    from actors.agents import BUILTIN_AGENTS, BUILTIN_SPECS, Calculator

    assert BUILTIN_AGENTS["calculator"] is Calculator
    assert list(BUILTIN_SPECS) == ["calculator", "data_processor", "text_analysis", "validation",
                                   "learning", "monitoring", "communication"]
