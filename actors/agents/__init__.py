"""The built-in agent types, by name. Their names are API: they never change once published.

Importing this package is cheap: agents import heavy libraries (torch, scikit-learn) only in
the replica processes that run them, in `setup()` or `run()`.
"""

from __future__ import annotations

from actors.agent import Agent
from actors.agents.calculator import Calculator
from actors.agents.communication import Communication
from actors.agents.data_processor import DataProcessor
from actors.agents.learning import Learning
from actors.agents.monitoring import Monitoring
from actors.agents.text_analysis import TextAnalysis
from actors.agents.validation import Validation
from storage.messages import AgentSpec

BUILTIN_AGENTS: dict[str, type[Agent]] = {
    "calculator": Calculator,
    "data_processor": DataProcessor,
    "text_analysis": TextAnalysis,
    "validation": Validation,
    "learning": Learning,
    "monitoring": Monitoring,
    "communication": Communication,
}

BUILTIN_SPECS: dict[str, AgentSpec] = {name: agent.spec
                                        for name, agent in BUILTIN_AGENTS.items()}
"""What each built-in type declares: what the router is given (`ml/` never sees agent classes)."""

__all__ = ["BUILTIN_AGENTS", "BUILTIN_SPECS", "Calculator", "Communication", "DataProcessor",
           "Learning", "Monitoring", "TextAnalysis", "Validation"]
