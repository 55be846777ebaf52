"""Workflow expressions: JMESPath over a run's context, never `eval`.

Every reference and condition in a workflow spec is a JMESPath expression evaluated against the
run's context:

    {"input": <the run's input>,
     "steps": {"<step id>": {"output": ..., "status": ...}},
     "item": <the current element, inside a mapped step only>}

The output of a mapped step (fan-out) is the list of its items' outputs, in item order (fan-in).
A payload template is any JSON value; a string of the form `"${ <expression> }"` is replaced by the
expression's value (the whole value, whatever its type), every other value is literal. A condition
holds when its value is truthy in JMESPath's sense: not null, false, or an empty string, list or
object. The functions here are pure: they read the context and never change it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

ROOT_NAMES = ("input", "steps", "item")
"""The names an expression may start from."""

_REFERENCE = re.compile(r"^\$\{(.*)\}\Z", re.DOTALL)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
# Node types whose first child is evaluated where the node is and whose others apply to its result.
_CHAINED = {"subexpression", "projection", "filter_projection", "index_expression", "flatten",
            "pipe", "value_projection"}


class ExpressionError(ValueError):
    """An expression that does not parse, or names something outside the context."""


@dataclass(frozen=True)
class Roots:
    """What an expression reads from the context: `input`, `item`, and which steps."""

    steps: frozenset[str] = frozenset()
    input: bool = False
    item: bool = False


def reference_expression(value: Any) -> str | None:
    """The expression of a `"${ ... }"` reference string (stripped), or None for a literal."""
    if not isinstance(value, str):
        return None
    match = _REFERENCE.match(value)
    return match.group(1).strip() if match else None


def reference(expression: str) -> str:
    """The canonical reference string for `expression`: `"${ expression }"`."""
    return "${ " + expression.strip() + " }"


def step_path(step_id: str) -> str:
    """`steps.<id>` with the id quoted when JMESPath needs it (`steps."load-2"`)."""
    name = step_id if _IDENTIFIER.match(step_id) else json.dumps(step_id)
    return f"steps.{name}"


def _parse(expression: str) -> Any:
    import jmespath
    from jmespath.exceptions import JMESPathError

    if not isinstance(expression, str) or not expression.strip():
        raise ExpressionError("an expression must be a non-empty text")
    try:
        return jmespath.compile(expression)
    except JMESPathError as exc:
        raise ExpressionError(f"{expression!r} is not valid JMESPath: "
                              f"{str(exc).splitlines()[0]}") from exc


def _visit(node: dict[str, Any], rooted: bool, found: dict[str, Any]) -> None:
    children = node.get("children", [])
    kind = node.get("type")
    if rooted and kind == "field":
        _root_name(node["value"], None, found)
        return
    if rooted and kind == "current":
        raise ExpressionError("start from input, steps.<id> or item, not the whole context (@)")
    if kind in _CHAINED and children:
        first = children[0]
        if rooted and kind == "subexpression" and first.get("type") == "field":
            _root_name(first["value"], children[1], found)
        else:
            _visit(first, rooted, found)
        for child in children[1:]:
            _visit(child, False, found)
        return
    if kind == "expref":
        for child in children:
            _visit(child, False, found)
        return
    for child in children:
        if isinstance(child, dict):
            _visit(child, rooted, found)


def _root_name(name: str, following: dict[str, Any] | None, found: dict[str, Any]) -> None:
    if name not in ROOT_NAMES:
        raise ExpressionError(f"{name!r} is not in the context; start from "
                              f"{', '.join(ROOT_NAMES)}")
    if name != "steps":
        found[name] = True
        return
    if following is None or following.get("type") != "field":
        raise ExpressionError("name one step: steps.<id>")
    found["steps"].add(following["value"])


def expression_roots(expression: str) -> Roots:
    """What `expression` reads (the steps it names, whether it uses input or item).

    Raises `ExpressionError` when it does not parse, starts from a name outside the context, or
    reads `steps` without naming one step."""
    parsed = _parse(expression)
    found: dict[str, Any] = {"steps": set(), "input": False, "item": False}
    _visit(parsed.parsed, True, found)
    return Roots(frozenset(found["steps"]), found["input"], found["item"])


def template_expressions(template: Any) -> list[str]:
    """Every `${ ... }` expression in a payload template, depth first."""
    if isinstance(template, dict):
        return [e for value in template.values() for e in template_expressions(value)]
    if isinstance(template, list):
        return [e for value in template for e in template_expressions(value)]
    expression = reference_expression(template)
    return [] if expression is None else [expression]


def canonical_template(template: Any) -> Any:
    """`template` with every reference written `"${ expression }"`, so equal templates compare
    equal however they were spaced."""
    if isinstance(template, dict):
        return {key: canonical_template(value) for key, value in template.items()}
    if isinstance(template, list):
        return [canonical_template(value) for value in template]
    expression = reference_expression(template)
    return template if expression is None else reference(expression)


def evaluate(expression: str, context: dict[str, Any]) -> Any:
    """The value of `expression` over `context` (null for a path that is absent)."""
    return _parse(expression).search(context)


def render_payload(template: Any, context: dict[str, Any]) -> Any:
    """`template` with each `"${ expression }"` string replaced by its value over `context`."""
    if isinstance(template, dict):
        return {key: render_payload(value, context) for key, value in template.items()}
    if isinstance(template, list):
        return [render_payload(value, context) for value in template]
    expression = reference_expression(template)
    return template if expression is None else evaluate(expression, context)


def condition_holds(expression: str, context: dict[str, Any]) -> bool:
    """Whether `expression` is truthy over `context` (JMESPath truthiness)."""
    value = evaluate(expression, context)
    return not (value is None or value is False or value in ("", [], {}))
