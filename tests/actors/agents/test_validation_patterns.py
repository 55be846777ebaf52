"""The validation agent's user-supplied patterns run on RE2: patterns that make a backtracking
engine take exponential time answer at once with the right verdict, and patterns RE2 cannot
take are refused naming their field.

On a backtracking engine the adversarial tests hang rather than fail: such a match holds the
GIL for hours, and neither of pytest-timeout's methods can interrupt it; the run's own deadline
ends it. On RE2 each finishes in milliseconds.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.agents.validation import Validation
from actors.errors import InvalidTaskInput
from storage.messages import AgentTask

ADVERSARIAL = "a" * 32 + "!"
CATASTROPHIC = [  # (pattern, whether it finds a match in ADVERSARIAL)
    ("((a+))+$", False),
    ("(a|a)*$", True),  # the empty match at the end, after 2**32 paths on a backtracking engine
    ("^(a+)+$", False),
    ("(a*)*b", False),
]


def run(payload: dict[str, Any]) -> dict[str, Any]:
    task = AgentTask(task_id="t", attempt=1, agent_type="validation", description="",
                     payload=payload, timeout_s=10)
    return asyncio.run(Validation().run(task))


def refusal(payload: dict[str, Any]) -> InvalidTaskInput:
    with pytest.raises(InvalidTaskInput) as caught:
        run(payload)
    return caught.value


@pytest.mark.timeout(20)
@pytest.mark.parametrize("pattern, matches", CATASTROPHIC)
def test_schema_pattern_that_backtracks_exponentially_answers_correctly(pattern, matches):
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": pattern}}}
    result = run({"schema": schema, "records": [{"code": ADVERSARIAL}, {"code": "b"}]})
    verdicts = [error["record"] for error in result["errors"]]
    assert (0 not in verdicts) is matches
    assert (1 not in verdicts) is (pattern == "(a|a)*$" or pattern == "(a*)*b")


@pytest.mark.timeout(20)
@pytest.mark.parametrize("pattern, matches", CATASTROPHIC)
def test_pattern_properties_that_backtrack_answer_correctly(pattern, matches):
    schema = {"type": "object", "patternProperties": {pattern: {"type": "integer"}},
              "additionalProperties": {"type": "string"}}
    result = run({"schema": schema, "document": {ADVERSARIAL: "text"}})
    # A matching key must hold an integer; a key no pattern matches must hold text.
    assert result["valid"] is not matches


@pytest.mark.timeout(20)
@pytest.mark.parametrize("pattern, matches", CATASTROPHIC)
def test_quality_rule_pattern_that_backtracks_answers_correctly(pattern, matches):
    result = run({"rows": [{"s": ADVERSARIAL}, {"s": "aaaa"}],
                  "rules": [{"column": "s", "check": "pattern", "regex": pattern}]})
    [report] = result["rules"]
    assert (0 not in [failure["row"] for failure in report["failures"]]) is matches


@pytest.mark.timeout(20)
def test_format_regex_is_judged_by_the_engine_that_runs_patterns():
    schema = {"type": "array", "items": {"format": "regex"}}
    result = run({"schema": schema, "document": ["((a+))+$", r"(a)\1", "(?=x)y"]})
    assert [error["path"] for error in result["errors"]] == ["/1", "/2"]


@pytest.mark.parametrize("payload, field", [
    ({"schema": {"properties": {"code": {"type": "string", "pattern": r"^(\w)\1$"}}},
      "document": {}}, "schema.properties.code.pattern"),
    ({"schema": {"items": [{"pattern": "(?P<x>a)(?P=x)"}]}, "document": []},
     "schema.items[0].pattern"),
    ({"schema": {"patternProperties": {r"^(?!tmp_)": {}}}, "document": {}},
     'schema.patternProperties["^(?!tmp_)"]'),
    ({"rows": [{"s": "x"}], "rules": [{"column": "s", "check": "unique"},
                                       {"column": "s", "check": "not_null"},
                                       {"column": "s", "check": "pattern", "pattern": r"(a)\1"}]},
     "rules[2].pattern"),
    ({"rows": [{"s": "x"}], "rules": [{"column": "s", "check": "regex", "regex": "(?<=a)b"}]},
     "rules[0].regex"),
])
def test_patterns_the_engine_cannot_take_are_refused_naming_the_field(payload, field):
    error = refusal(payload)
    assert error.code == "invalid_task_input" and error.details["field"] == field
    assert str(error).startswith(f"{field}: the pattern ")
    assert "backreference" in str(error) or "lookaround" in str(error)


def test_a_pattern_in_data_keywords_is_not_taken_for_a_schema_pattern():
    schema = {"const": {"pattern": r"(a)\1"}, "default": {"pattern": "(?=x)"}}
    assert run({"schema": schema, "document": {"pattern": r"(a)\1"}})["valid"] is True


def test_unevaluated_properties_beside_pattern_properties_is_refused():
    schema = {"$defs": {"tags": {"patternProperties": {"^tag_": {"type": "string"}}}},
              "allOf": [{"$ref": "#/$defs/tags"}], "unevaluatedProperties": False}
    error = refusal({"schema": schema, "document": {"tag_a": "x"}})
    assert error.details["field"] == "schema.unevaluatedProperties"
    assert "schema.$defs.tags.patternProperties" in str(error)


def test_lone_surrogates_in_patterns_and_text_are_handled():
    """JSON allows them (\\ud800); UTF-8, RE2's text, cannot carry them."""
    error = refusal({"rows": [{"s": "x"}],
                     "rules": [{"column": "s", "check": "pattern", "regex": "a\ud800"}]})
    assert error.details["field"] == "rules[0].regex" and "lone surrogate" in str(error)
    result = run({"rows": [{"s": "a\ud800b"}, {"s": "zzz"}],
                  "rules": [{"column": "s", "check": "pattern", "regex": "^a.b$"}]})
    assert [failure["row"] for failure in result["rules"][0]["failures"]] == [1]
