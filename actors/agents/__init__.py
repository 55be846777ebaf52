"""The built-in agent types, by name. Their names are API: they never change once published.

Importing this package loads no agent: an agent's module is imported when it is first named here
(its class, `BUILTIN_AGENTS` or `BUILTIN_SPECS`), so a replica process, which imports only its own
agent's module, loads neither the other agents nor what they need (HTTP clients, SQL, JSON
Schema). Agents import heavy libraries (scikit-learn, FAISS) only in `setup()` or `run()`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors.agent import Agent
    from actors.agents.calculator import Calculator
    from actors.agents.communication import Communication
    from actors.agents.data_processor import DataProcessor
    from actors.agents.learning import Learning
    from actors.agents.monitoring import Monitoring
    from actors.agents.text_analysis import TextAnalysis
    from actors.agents.validation import Validation
    from storage.messages import AgentSpec

    BUILTIN_AGENTS: dict[str, type[Agent]]
    """Each built-in type's class, by name."""
    BUILTIN_SPECS: dict[str, AgentSpec]
    """What each built-in type declares: what the router is given (`ml/` never sees agent
    classes)."""

_CLASSES = {  # type name: (module, class), in the order the types are listed everywhere
    "calculator": ("actors.agents.calculator", "Calculator"),
    "data_processor": ("actors.agents.data_processor", "DataProcessor"),
    "text_analysis": ("actors.agents.text_analysis", "TextAnalysis"),
    "validation": ("actors.agents.validation", "Validation"),
    "learning": ("actors.agents.learning", "Learning"),
    "monitoring": ("actors.agents.monitoring", "Monitoring"),
    "communication": ("actors.agents.communication", "Communication"),
}

__all__ = ["BUILTIN_AGENTS", "BUILTIN_SPECS", "Calculator", "Communication", "DataProcessor",
           "Learning", "Monitoring", "TextAnalysis", "Validation"]


def __getattr__(name: str) -> Any:
    """The package's names, each module imported on first use (see the module)."""
    if name == "BUILTIN_AGENTS":
        value: Any = {type_name: __getattr__(class_name)
                      for type_name, (_, class_name) in _CLASSES.items()}
    elif name == "BUILTIN_SPECS":
        agents = __getattr__("BUILTIN_AGENTS")
        value = {type_name: agent.spec for type_name, agent in agents.items()}
    else:
        module = next((module for module, class_name in _CLASSES.values() if class_name == name),
                      None)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
