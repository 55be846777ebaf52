"""Which agent types exist: the built-ins plus any the user names by import path.

A third-party agent is any `actors.sdk.Agent` subclass importable as `package.module:ClassName`.
It registers without editing the platform, either way:
- its package declares an entry point in the `ymera.agents` group
  (`[project.entry-points."ymera.agents"] translator = "my_agents.translate:Translator"`);
- or `YMERA_AGENT_MODULES` lists its import path.

The `llm` agent type is built in but registered only where a language model is configured
(`load_agent_types(..., llm=True)`); every place that loads agent types (the orchestrator,
`ymera route`) asks the same settings, so they agree on it. The `knowledge` agent type (a
tenant's own documents) is built in and always registered.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Iterable, Mapping

from actors.agent import Agent
from actors.agents import BUILTIN_AGENTS
from storage.errors import InvalidRequest
from storage.messages import AGENT_TYPE_NAME, AgentSpec

ENTRY_POINT_GROUP = "ymera.agents"


def import_agent(path: str) -> type[Agent]:
    """The agent class at `module:Class`, checked against the contract."""
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise InvalidRequest(f"agent path {path!r} must look like 'package.module:ClassName'")
    try:
        agent_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise InvalidRequest(f"cannot import agent {path!r}: {exc}") from exc
    if not (isinstance(agent_class, type) and issubclass(agent_class, Agent)):
        raise InvalidRequest(f"{path!r} is not a subclass of actors.sdk.Agent")
    if not hasattr(agent_class, "spec"):
        raise InvalidRequest(f"agent {path!r} declares no `spec`")
    if not AGENT_TYPE_NAME.fullmatch(agent_class.spec.name):
        raise InvalidRequest(
            f"agent name {agent_class.spec.name!r} of {path!r} must be lowercase letters, "
            "digits and underscores, 2 to 64 long"
        )
    return agent_class


def entry_point_paths() -> list[str]:
    """`module:Class` of every agent installed packages declare in the `ymera.agents` group."""
    return [entry.value for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]


def load_agent_types(extra_paths: Iterable[str] = (), *,
                     llm: bool = False) -> dict[str, type[Agent]]:
    """Every agent type by name: built-ins and `knowledge` (with `llm` when a model is
    configured), then installed `ymera.agents` entry points, then `extra_paths`; names must
    be unique."""
    from actors.agents.knowledge import Knowledge

    agent_types: dict[str, type[Agent]] = {**BUILTIN_AGENTS, Knowledge.spec.name: Knowledge}
    if llm:
        from actors.agents.llm import Llm

        agent_types[Llm.spec.name] = Llm
    for path in [*entry_point_paths(), *extra_paths]:
        agent_class = import_agent(path)
        name = agent_class.spec.name
        if name in agent_types and agent_types[name] is not agent_class:
            raise InvalidRequest(f"agent type {name!r} from {path!r} is already registered")
        agent_types[name] = agent_class
    return agent_types


def agent_specs(agent_types: Mapping[str, type[Agent]]) -> dict[str, AgentSpec]:
    """What each agent type declares, by name: what the router (`ml/`) is given, never the
    agent classes themselves."""
    return {name: agent_class.spec for name, agent_class in agent_types.items()}
