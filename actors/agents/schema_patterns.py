"""JSON Schema validation whose regular expressions run on RE2 (`actors.agents.patterns`).

jsonschema matches `pattern`, `patternProperties` (and, through them, `additionalProperties`)
and asserts `format: regex` with Python's backtracking `re`. `re2_validator` gives the
same draft's validator with those keywords and that format on RE2 instead (through
`jsonschema.validators.extend` and a copied `FormatChecker`), so matching time is linear
whatever the task's schema holds.

Guarantees: every pattern of the schema is compiled before any document is validated, and the
first one RE2 cannot take is `InvalidTaskInput` naming where it is (for example
`schema.properties.code.pattern` or `schema.patternProperties["^(a)\\1$"]`). jsonschema's
`unevaluatedProperties` would match `patternProperties` with `re` itself, so a schema using
both (drafts 2019-09 and 2020-12) is refused the same way rather than run on `re`.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

from jsonschema import FormatChecker, validators
from jsonschema.exceptions import ValidationError
from referencing import Registry

from actors.agents.patterns import CompiledPattern, compile_pattern, is_pattern
from actors.errors import InvalidTaskInput

# Keywords whose values are data, not subschemas: a "pattern" key in them is not a pattern.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")


def field_path(root: str, parts: tuple[Any, ...]) -> str:
    """`root.a.b[0]["odd key"]`: where in the task a part of its schema sits."""
    text = root
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
            text += f".{part}"
        else:
            text += f"[{json.dumps(part, ensure_ascii=False)}]"
    return text


class SchemaPatterns:
    """The schema's patterns compiled by RE2, looked up by their text (a pattern met only
    while validating, behind a `$ref` to a metaschema, is compiled on first use)."""

    def __init__(self, schema: Any, root: str = "schema") -> None:
        self.compiled: dict[str, CompiledPattern] = {}
        pattern_properties_at: str | None = None
        unevaluated_at: str | None = None
        stack: list[tuple[Any, tuple[Any, ...]]] = [(schema, ())]
        while stack:
            node, parts = stack.pop()
            if isinstance(node, list):
                stack.extend((item, (*parts, index)) for index, item in enumerate(node))
                continue
            if not isinstance(node, dict):
                continue
            if isinstance(node.get("pattern"), str):
                self._compile(node["pattern"], field_path(root, (*parts, "pattern")))
            if isinstance(node.get("patternProperties"), dict):
                pattern_properties_at = field_path(root, (*parts, "patternProperties"))
                for pattern in node["patternProperties"]:
                    self._compile(pattern, field_path(root, (*parts, "patternProperties",
                                                             pattern)))
            if "unevaluatedProperties" in node:
                unevaluated_at = field_path(root, (*parts, "unevaluatedProperties"))
            stack.extend((value, (*parts, key)) for key, value in node.items()
                         if key not in _DATA_KEYWORDS and isinstance(value, (dict, list)))
        self.mixes_unevaluated: tuple[str, str] | None = None
        if unevaluated_at and pattern_properties_at:
            self.mixes_unevaluated = (unevaluated_at, pattern_properties_at)

    def _compile(self, pattern: str, field: str) -> None:
        if pattern not in self.compiled:
            self.compiled[pattern] = compile_pattern(pattern, field)

    def search(self, pattern: str, text: str) -> bool:
        if pattern not in self.compiled:
            self._compile(pattern, "schema (a referenced pattern)")
        return self.compiled[pattern].search(text) is not None


def _keywords(patterns: SchemaPatterns) -> dict[str, Any]:
    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[Any]:
        if validator.is_type(instance, "string") and not patterns.search(patrn, instance):
            yield ValidationError(f"{instance!r} does not match {patrn!r}")

    def pattern_properties(validator: Any, pattern_properties: dict[str, Any], instance: Any,
                           schema: Any) -> Iterator[Any]:
        if not validator.is_type(instance, "object"):
            return
        for patrn, subschema in pattern_properties.items():
            for key, value in instance.items():
                if patterns.search(patrn, key):
                    yield from validator.descend(value, subschema, path=key, schema_path=patrn)

    def additional_properties(validator: Any, additional: Any, instance: Any,
                              schema: Any) -> Iterator[Any]:
        if not validator.is_type(instance, "object"):
            return
        declared = schema.get("properties", {})
        matched = schema.get("patternProperties", {})
        extras = sorted((key for key in instance if key not in declared
                         and not any(patterns.search(p, key) for p in matched)), key=str)
        if validator.is_type(additional, "object"):
            for extra in extras:
                yield from validator.descend(instance[extra], additional, path=extra)
        elif not additional and extras:
            joined = ", ".join(repr(extra) for extra in extras)
            if matched:
                verb = "does" if len(extras) == 1 else "do"
                yield ValidationError(f"{joined} {verb} not match any of the regexes: "
                                      f"{', '.join(repr(p) for p in sorted(matched))}")
            else:
                verb = "was" if len(extras) == 1 else "were"
                yield ValidationError(f"Additional properties are not allowed ({joined} {verb} "
                                      "unexpected)")

    return {"pattern": pattern, "patternProperties": pattern_properties,
            "additionalProperties": additional_properties}


def re2_format_checker(base: FormatChecker) -> FormatChecker:
    """`base` with `format: regex` meaning "a pattern RE2 takes"."""
    checker = copy.copy(base)
    checker.checkers = dict(base.checkers)
    checker.checks("regex")(is_pattern)
    return checker


def re2_validator(validator_class: Any, schema: Any, patterns: SchemaPatterns,
                  check_formats: bool) -> Any:
    """A validator of `schema` (whose `patterns` are compiled) of `validator_class`'s draft,
    with every pattern on RE2; refuses the schema (`InvalidTaskInput`) when jsonschema itself
    would match one of them."""
    if patterns.mixes_unevaluated and "unevaluatedProperties" in validator_class.VALIDATORS:
        unevaluated_at, pattern_properties_at = patterns.mixes_unevaluated
        raise InvalidTaskInput(
            f"{unevaluated_at} cannot be checked together with {pattern_properties_at}: "
            "jsonschema would match those patterns on a backtracking engine; use "
            "additionalProperties instead", {"field": unevaluated_at})
    overrides = {name: check for name, check in _keywords(patterns).items()
                 if name in validator_class.VALIDATORS}
    extended = validators.extend(validator_class, overrides)
    checker = re2_format_checker(validator_class.FORMAT_CHECKER) if check_formats else None
    return extended(schema, registry=Registry(), format_checker=checker)
