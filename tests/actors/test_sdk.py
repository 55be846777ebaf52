"""`actors.sdk` stays the one import of agent authors: complete for the agent contract, and
the only platform module the example agent and docs/agents.md import."""

from __future__ import annotations

import ast
import inspect
import re
import typing
from pathlib import Path

import pytest

import actors.errors
from actors import sdk

ROOT = Path(__file__).resolve().parents[2]
PLATFORM_PACKAGES = {"actors", "storage", "ml", "serve_apps", "cluster"}
EXAMPLE = ROOT / "examples" / "ymera-example-agent"


def test_all_names_exactly_what_the_module_exports():
    public = {name for name, value in vars(sdk).items()
              if not name.startswith("_") and not inspect.ismodule(value)
              and name != "annotations"}
    assert sorted(sdk.__all__) == sorted(public)
    assert len(set(sdk.__all__)) == len(sdk.__all__)


def test_every_error_an_agent_raises_is_exported():
    agent_errors = {cls.__name__ for cls in vars(actors.errors).values()
                    if isinstance(cls, type) and issubclass(cls, actors.errors.AgentError)}
    assert agent_errors <= set(sdk.__all__)


def _named_types(hint: object) -> set[type]:
    platform = isinstance(hint, type) and hint.__module__.split(".")[0] in PLATFORM_PACKAGES
    found = {hint} if platform else set()
    for arg in typing.get_args(hint):
        found |= _named_types(arg)
    return found


def test_every_type_in_the_agent_base_and_its_port_is_exported():
    """Whatever `Agent` and `ClusterFacts` take or hold (spec, task, context, port) an author
    can import from the sdk, so a new attribute or parameter cannot leave it behind."""
    used: set[type] = set()
    for owner in (sdk.Agent, sdk.ClusterFacts, sdk.AgentSpec):
        used |= {t for hint in typing.get_type_hints(owner).values()
                 for t in _named_types(hint)}
        for name, member in inspect.getmembers(owner, inspect.isfunction):
            if not name.startswith("_"):
                used |= {t for hint in typing.get_type_hints(member).values()
                         for t in _named_types(hint)}
    assert {t.__name__ for t in used} <= set(sdk.__all__)
    assert {"setup", "run", "health"} <= {name for name, _ in
                                          inspect.getmembers(sdk.Agent, inspect.isfunction)}


def _platform_imports(source: str, where: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, where)):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) and node.module
                 else [])
        found += [f"{where}: {name}" for name in names
                  if name.split(".")[0] in PLATFORM_PACKAGES]
    return found


def test_the_example_agent_imports_the_platform_only_through_the_sdk():
    sources = sorted((EXAMPLE / "ymera_example_agent").glob("*.py")) + sorted(
        (EXAMPLE / "tests").glob("*.py"))
    imports = [entry for path in sources
               for entry in _platform_imports(path.read_text(), path.name)]
    assert imports and all(entry.endswith(": actors.sdk") for entry in imports), imports


@pytest.mark.parametrize("page", ["docs/agents.md", "README.md",
                                  "examples/ymera-example-agent/README.md"])
def test_the_docs_show_agents_importing_only_the_sdk(page: str):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), re.S)
    imports = [entry for block in blocks for entry in _platform_imports(block, page)
               if "Agent" in block]
    assert all(entry.endswith(": actors.sdk") for entry in imports), imports
