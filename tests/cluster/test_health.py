"""What `ymera status` prints: small by default, every declared example on request."""

from __future__ import annotations

import json

from actors.agents import BUILTIN_AGENTS
from cluster.health import examples_report, status_view

STATUS = {"accepting": True, "pools": [], "queued": {},
          "agent_types": {name: {"name": name, "description": agent.spec.description,
                                 "examples": list(agent.spec.examples)}
                          for name, agent in BUILTIN_AGENTS.items()}}


def test_status_counts_each_types_examples_instead_of_listing_them():
    shown = status_view(STATUS)

    calculator = shown["agent_types"]["calculator"]
    assert "examples" not in calculator and calculator["name"] == "calculator"
    assert calculator["example_count"] == len(BUILTIN_AGENTS["calculator"].spec.examples) > 10
    assert len(json.dumps(shown)) < len(json.dumps(STATUS)) / 4
    assert "examples" in STATUS["agent_types"]["calculator"]  # the status itself is unchanged


def test_examples_are_listed_when_asked_for():
    assert status_view(STATUS, examples=True) == STATUS
    text = examples_report(STATUS)
    assert BUILTIN_AGENTS["monitoring"].spec.examples[0] in text
    assert f"calculator ({len(BUILTIN_AGENTS['calculator'].spec.examples)} examples):" in text
