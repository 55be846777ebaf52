"""Agent types by import path: checked against the contract, names included; the router is
given what they declare, never the classes."""

from __future__ import annotations

import sys
import types

import pytest

from actors.agents import BUILTIN_AGENTS, BUILTIN_SPECS
from actors.registry import agent_specs, import_agent, load_agent_types
from actors.sdk import Agent, AgentSpec
from storage.errors import InvalidRequest


def _agent_named(name: str) -> type[Agent]:
    class Named(Agent):
        spec = AgentSpec(name=name, description="d", capabilities=("c",), examples=("e",))

    return Named


@pytest.fixture
def third_party(monkeypatch) -> types.ModuleType:
    module = types.ModuleType("third_party_agents")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module


@pytest.mark.parametrize("name", ["Translator", "x", "9lives", "translator\n", "a" * 65])
def test_an_agent_with_a_bad_name_is_refused_naming_it(third_party, name: str):
    third_party.Bad = _agent_named(name)

    with pytest.raises(InvalidRequest, match="must be lowercase letters, digits and underscores"):
        import_agent("third_party_agents:Bad")


def test_a_good_agent_registers_and_the_router_gets_its_spec(third_party):
    third_party.Translator = _agent_named("translator")

    agent_types = load_agent_types(["third_party_agents:Translator"])

    assert agent_types["translator"] is third_party.Translator
    specs = agent_specs(agent_types)
    assert specs["translator"] is third_party.Translator.spec
    assert specs.items() >= BUILTIN_SPECS.items() and set(specs) == set(agent_types)
    assert set(BUILTIN_SPECS) == set(BUILTIN_AGENTS)


def test_every_built_in_pool_at_its_default_size_fits_a_two_cpu_head() -> None:
    """`make up` on a 2-core machine starts every pool (the `llm` one too, with a model)."""
    platform_types = {*BUILTIN_AGENTS, "knowledge", "llm"}  # not the installed example agent
    agent_types = load_agent_types(llm=True)
    assert platform_types <= set(agent_types)
    reserved = sum(agent.spec.resources.num_cpus * agent.spec.replicas
                   for name, agent in agent_types.items() if name in platform_types)
    assert reserved <= 2.0 + 1e-9, reserved
