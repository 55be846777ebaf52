"""The calculator agent: every input form, English phrasings, and clear refusals."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from actors.agent import Agent
from actors.agents import BUILTIN_AGENTS
from actors.agents.calculator import Calculator
from actors.errors import InvalidTaskInput
from storage.messages import AgentTask


def calculate(description: str = "", payload: dict[str, Any] | None = None) -> Any:
    task = AgentTask(task_id="t", attempt=1, agent_type="calculator", description=description,
                     payload={} if payload is None else payload, timeout_s=10)
    result = asyncio.run(Calculator().run(task))
    json.dumps(result, allow_nan=False)  # every result is plain JSON
    return result


def refusal(description: str = "", payload: dict[str, Any] | None = None) -> str:
    with pytest.raises(InvalidTaskInput) as caught:
        calculate(description, payload)
    return str(caught.value)


def test_spec_declares_what_the_router_learns_from():
    spec = Calculator.spec
    assert spec.name == "calculator"
    assert BUILTIN_AGENTS["calculator"] is Calculator and issubclass(Calculator, Agent)
    assert len(spec.capabilities) >= 6
    assert len(set(spec.examples)) == len(spec.examples) >= 15
    assert spec.resources.num_cpus == 0.1 and spec.concurrency == 8


def test_expression_in_the_payload():
    result = calculate(payload={"expression": "2*(3+4)^2"})
    assert result == {"expression": "2*(3+4)^2", "value": 98}


def test_a_list_of_expressions():
    result = calculate(payload={"expressions": ["1+1", "sqrt(16)", "10/4", "2^10"]})
    assert result == {"values": [2, 4, 2.5, 1024]}


def test_a_bad_expression_in_a_list_is_named_by_index():
    message = refusal(payload={"expressions": ["1+1", "1/0"]})
    assert "expressions[1]" in message and "division by zero" in message
    assert "expressions'[1] must be a string" in refusal(payload={"expressions": ["1", 2]})
    assert "at most 1000" in refusal(payload={"expressions": ["1"] * 1001})
    assert "must be a list of strings" in refusal(payload={"expressions": "1+1"})


@pytest.mark.parametrize("operation, numbers, expected", [
    ("sum", [1, 2, 3.5], 6.5),
    ("product", [2, 3, 7], 42),
    ("mean", [2, 4, 9], 5),
    ("median", [5, 1, 4, 2], 3.0),
    ("min", [4, -2, 7], -2),
    ("max", [4, -2, 7], 7),
    ("stdev", [2, 4, 4, 4, 5, 5, 7, 9], 2.1380899352994),
    ("variance", [1, 2, 3, 4], 1.66666666666667),
    ("MEAN", [1, 2], 1.5),
])
def test_operation_over_numbers(operation, numbers, expected):
    result = calculate(payload={"operation": operation, "numbers": numbers})
    assert result["operation"] == operation.lower()
    assert result["value"] == pytest.approx(expected, rel=1e-12)
    assert result["count"] == len(numbers)


def test_operation_can_come_from_the_description():
    result = calculate("what is the average of these numbers", {"numbers": [1, 2, 6]})
    assert result == {"operation": "mean", "value": 3, "count": 3}
    assert calculate("add the numbers", {"numbers": [1, 2]})["value"] == 3  # the client's example


def test_numbers_must_be_numbers():
    assert "'numbers'[1] is a boolean" in refusal(
        payload={"operation": "sum", "numbers": [1, True]})
    assert "'numbers'[0] is a string" in refusal(payload={"operation": "sum", "numbers": ["3", 4]})
    assert "must be a list of numbers" in refusal(payload={"operation": "sum", "numbers": 5})
    assert "unknown operation 'mode'" in refusal(payload={"operation": "mode", "numbers": [1]})
    assert "needs at least 2 numbers" in refusal(payload={"operation": "stdev", "numbers": [1]})
    assert "needs a list of 'numbers'" in refusal(payload={"operation": "sum"})
    assert "needs an 'operation'" in refusal("", {"numbers": [1, 2]})


@pytest.mark.parametrize("description, expected", [
    ("What is 15% of 240?", 36),
    ("calculate 2^10 + 5", 1029),
    ("sqrt(144) * 3", 36),
    ("what is 12 times 7", 84),
    ("divide 100 by 8", 12.5),
    ("add 3, 4 and 5", 12),
    ("What is 7 minus 10?", -3),
    ("what's 6 multiplied by 7", 42),
    ("what is 45 divided by 9", 5),
    ("2 to the power of 10", 1024),
    ("9 squared", 81),
    ("what is 3 cubed plus 1", 28),
    ("What is the square root of 81?", 9),
    ("What is 20 percent of 50?", 10),
    ("subtract 17 from 250", 233),
    ("multiply 6.5 by 4", 26.0),
    ("Compute the average of 2, 4 and 9", 5),
    ("sum of 10, 20 and 30", 60),
    ("log base 2 of 1024", 10.0),
    ("How many ways are there to choose 2 out of 5?", 10),
    ("What is 7 factorial?", 5040),
    ("what is 1,250 plus 3", 1253),
    ("What is 12 x 7?", 84),
    ("What is -5 times negative 3?", 15),
    ("Task 7: compute 3*4, please", 12),
    ("What's the remainder when 17 is divided by 5?", 2),
])
def test_english_descriptions(description, expected):
    assert calculate(description)["value"] == pytest.approx(expected)


def test_the_description_reports_what_it_computed():
    assert calculate("What is 15% of 240?") == {"expression": "(15*240/100)", "value": 36}


def test_every_declared_example_computes():
    for example in Calculator.spec.examples:
        assert isinstance(calculate(example)["value"], (int, float)), example


def test_no_expression_in_the_description():
    message = refusal("please help me with my homework")
    assert "no arithmetic expression was found" in message and "'expression'" in message


def test_errors_from_the_description_keep_their_reason():
    assert "division by zero" in refusal("what is 5 divided by 0")
    assert "unbalanced parenthesis" in refusal("compute (2 + 3 * 4")


@pytest.mark.parametrize("expression, fragment", [
    ("(1+2", "unbalanced parenthesis"),
    ("foo(3)", "unknown name 'foo'"),
    ("3 +", "expression ends after '+'"),
    ("sqrt(-1)", "square root of a negative number"),
    ("__import__('os').system('true')", "unknown name '__import__'"),
])
def test_bad_expressions_are_refused(expression, fragment):
    assert fragment in refusal(payload={"expression": expression})


def test_huge_exponent_is_refused_quickly():
    started = time.perf_counter()
    assert "too large" in refusal(payload={"expression": "2**99999999"})
    assert time.perf_counter() - started < 1.0


def test_wrong_payload_shapes():
    assert "'expression' must be a string" in refusal(payload={"expression": 5})
    assert "give only one of" in refusal(payload={"expression": "1", "numbers": [1]})


