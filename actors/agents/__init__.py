"""The built-in agent types, by name. Their names are API: they never change once published."""

from __future__ import annotations

from actors.agent import Agent
from actors.agents.calculator import Calculator
from actors.agents.data_processor import DataProcessor

BUILTIN_AGENTS: dict[str, type[Agent]] = {
    "calculator": Calculator,
    "data_processor": DataProcessor,
}

__all__ = ["BUILTIN_AGENTS", "Calculator", "DataProcessor"]
