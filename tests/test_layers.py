"""The layers hold: storage → ml → actors → serve_apps → cluster, Ray behind its wall.

Agents, and the module agent authors import (`actors.sdk`), load without Ray or the
orchestrator, and the built-in agents never import either, not even inside a function (they
learn about the cluster through the port their replica gives them); `storage/` and `ml/`
import neither Ray nor any layer above them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "storage": ("ray", "ml", "actors", "serve_apps", "cluster"),
    "ml": ("ray", "actors", "serve_apps", "cluster"),
    "actors/agents": ("ray", "actors.deploy", "actors.orchestrator", "actors.registry",
                      "actors.ray_backend", "actors.cluster_facts", "serve_apps", "cluster"),
}
"""What each package never imports (a module, or anything under it), anywhere in its code."""


def _imported(path: Path) -> list[tuple[int, str]]:
    """Every module `path` imports, anywhere in it, with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_never_imports_ray_or_what_sits_above_it(package: str):
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {module}"
             for path in sorted((ROOT / package).rglob("*.py"))
             for line, module in _imported(path)
             if any(module == banned or module.startswith(banned + ".")
                    for banned in FORBIDDEN[package])]
    assert wrong == []


@pytest.mark.parametrize("module", ["actors.agents", "actors.sdk", "actors.registry"])
def test_agents_load_without_ray_or_the_orchestrator(module: str):
    check = (f"import sys, {module}; "
             "loaded = {'ray', 'actors.orchestrator', 'actors.deploy', 'actors.ray_backend', "
             "'actors.cluster_facts'} & set(sys.modules); assert not loaded, sorted(loaded)")
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
