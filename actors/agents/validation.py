"""The `validation` agent: JSON Schema validation, and data-quality rules over tables.

Two operations, named by payload "operation" or, when that is absent, by the payload's keys and
clear words in the description ("validate against this schema", "run data quality checks"):

    schema   {"schema": {...}, "document": any JSON}  or  {"schema": {...}, "records": [...]}
             → {"valid", "draft", "error_count", "errors": [{"path", "schema_path", "message",
                "validator", ("record")}], "truncated", (record counts)}
    quality  {"rows": [...] | "csv": "...", "rules": [{"column", "check", ...params, "name"}]}
             → {"passed", "summary", "rules": [{"passed", "checked", "failed", "failure_ratio",
                "failures": [{"row", "value"}], ...}]}

Schemas use the draft their "$schema" names (Draft 2020-12 without one) and are checked against
that draft's metaschema first. A "$ref" is followed only within the schema or to the drafts'
metaschemas, never fetched from the network. "format" is asserted for the formats the library can
check without extras (email, ipv4, ipv6, date, uuid, regex, ...) unless "check_formats" is false.

Every pattern a task gives (schema `pattern`, `patternProperties`, `format: regex`, a rule's
`regex`) runs on RE2 (`actors.agents.patterns`): linear time whatever the pattern; one RE2
cannot take (a backreference, lookaround) is refused naming its field.

Quality checks: not_null fails null and blank-text cells; every other check skips nulls, so its
`checked` count is the non-null cells. `unique` fails every cell whose value occurs more than once.
`pattern` searches (anchor with ^...$) and `length` measures cells as text, numbers included;
`type` "boolean" also accepts the text true/false in CSV input. Values compare by kind (see
`tables`): 1 and 1.0 are the same allowed value, 1 and true are not.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeGuard

import referencing.exceptions
from jsonschema import validators
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.protocols import Validator

from actors.agent import Agent, invalid
from actors.agents.tables import (
    Cell, Table, cell_key, describe, is_scalar, payload_table,
    unknown_column)
from actors.agents.operations import OperationChooser
from actors.agents.patterns import CompiledPattern, compile_pattern
from actors.agents.schema_patterns import SchemaPatterns, re2_format_checker, re2_validator
from storage.messages import AgentSpec, AgentTask, Resources

OPERATIONS = ("schema", "quality")
CHECKS = ("not_null", "unique", "type", "range", "pattern", "allowed_values", "length")
VALUE_TYPES = ("number", "integer", "string", "boolean")
DRAFTS: dict[type[Validator], str] = {
    validators.Draft3Validator: "draft-03", validators.Draft4Validator: "draft-04",
    validators.Draft6Validator: "draft-06", validators.Draft7Validator: "draft-07",
    validators.Draft201909Validator: "2019-09", validators.Draft202012Validator: "2020-12",
}
DEFAULT_MAX_ERRORS = 100
DEFAULT_MAX_FAILURES = 20
MAX_REPORTED = 10_000
MAX_RULES = 200
MAX_ALLOWED_VALUES = 10_000
MAX_PATTERN_LENGTH = 500
MAX_MESSAGE_LENGTH = 500

_OPERATION_ALIASES = {
    "json_schema": "schema", "jsonschema": "schema", "validate_schema": "schema",
    "data_quality": "quality", "quality_checks": "quality", "checks": "quality",
}
_CHECK_ALIASES = {
    "required": "not_null", "notnull": "not_null", "non_null": "not_null",
    "not_empty": "not_null", "distinct": "unique", "regex": "pattern", "match": "pattern",
    "in": "allowed_values", "enum": "allowed_values", "one_of": "allowed_values",
    "between": "range",
}
_TYPE_ALIASES = {"int": "integer", "float": "number", "numeric": "number", "str": "string",
                 "text": "string", "bool": "boolean"}
# The parameters each check reads, besides "column", "check" and "name".
_PARAMETERS = {
    "not_null": (), "unique": (), "type": ("type",), "range": ("min", "max"),
    "pattern": ("regex",), "allowed_values": ("values",), "length": ("min_length", "max_length"),
}
_RULE_KEYS = ("column", "check", "name")

_DESCRIBED = {operation: re.compile(pattern, re.IGNORECASE) for operation, pattern in {
    "schema": r"\bschemas?\b|\bconforms?\b",
    "quality": r"\bquality\b|\bnulls?\b|\bmissing\b|\bunique\w*|\bduplicat\w*|\brules?\b"
               r"|\ballowed values\b|\bout of range\b|\bdata checks?\b",
}.items()}
_HINTED_BY = {"schema": ("schema", "document", "records"), "quality": ("rules",)}


OPERATION_CHOOSER = OperationChooser(
    OPERATIONS, _OPERATION_ALIASES, _DESCRIBED, _HINTED_BY,
    "schema (payload 'schema' with 'document' or 'records'), quality (payload 'rules' with "
    "'rows' or 'csv')")


def _bounded_count(payload: dict[str, Any], key: str, default: int) -> int:
    value = payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REPORTED:
        raise invalid(f"payload {key!r} must be a whole number from 0 to {MAX_REPORTED}, got "
                      f"{describe(value)}", field=key)
    return value


# ------------------------------------------------------------------------------- JSON Schema

def _validator_class(schema: Any) -> type[Validator]:
    if not isinstance(schema, (dict, bool)):
        raise invalid(f"payload 'schema' must be a JSON Schema (an object or a boolean), got "
                      f"{describe(schema)}", field="schema")
    if isinstance(schema, bool) or "$schema" not in schema:
        return validators.Draft202012Validator
    named = schema["$schema"]
    found = validators.validator_for(schema, default=None) if isinstance(named, str) else None
    if found not in DRAFTS:
        known = ", ".join(cls.META_SCHEMA["$schema"] for cls in DRAFTS)
        raise invalid(f"schema '$schema' {named!r} names no draft this agent knows; use one of: "
                      f"{known} (or leave '$schema' out for Draft 2020-12)", field="schema")
    return found


def _pointer(path: Iterable[Any]) -> str:
    """A JSON Pointer (RFC 6901): "" for the root, "/items/0/name" below it."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def _clipped(message: str) -> str:
    if len(message) <= MAX_MESSAGE_LENGTH:
        return message
    return message[:MAX_MESSAGE_LENGTH - 3] + "..."


def _checked_schema(validator_class: Any, schema: Any) -> None:
    try:
        validator_class.check_schema(
            schema, format_checker=re2_format_checker(validator_class.FORMAT_CHECKER))
    except SchemaError as exc:
        path = _pointer(exc.path)
        raise invalid(
            f"payload 'schema' is not a valid {DRAFTS[validator_class]} JSON Schema: at "
            f"{path or 'its root'}: {_clipped(exc.message)}",
            field="schema", path=path, validator=exc.validator) from exc


def _errors_of(validator: Any, instance: Any) -> Iterator[ValidationError]:
    """The instance's validation errors; an unresolvable "$ref" is the task's fault, reported
    as such."""
    try:
        yield from validator.iter_errors(instance)
    except referencing.exceptions.Unresolvable as exc:
        raise invalid(f"the schema's $ref cannot be resolved ({exc}); references are followed "
                      "only within the schema, never fetched", field="schema") from exc


def validate_schema(payload: dict[str, Any]) -> dict[str, Any]:
    """Every error of the document (or of each record) against payload "schema"; the first
    "max_errors" of them are listed, all of them are counted."""
    if "schema" not in payload:
        raise invalid("schema validation needs payload 'schema': a JSON Schema object",
                      field="schema")
    schema = payload["schema"]
    validator_class = _validator_class(schema)
    patterns = SchemaPatterns(schema)  # first: a pattern RE2 refuses is named where it is
    _checked_schema(validator_class, schema)
    check_formats = payload.get("check_formats", True)
    if not isinstance(check_formats, bool):
        raise invalid(f"payload 'check_formats' must be true or false, got "
                      f"{describe(check_formats)}", field="check_formats")
    max_errors = _bounded_count(payload, "max_errors", DEFAULT_MAX_ERRORS)
    given = [key for key in ("document", "records") if key in payload]
    if len(given) != 1:
        problem = "gives both" if given else "needs one of"
        raise invalid(f"schema validation {problem} payload 'document' (one JSON value) and "
                      "'records' (a list, each validated on its own); give exactly one",
                      field="document")
    if given == ["records"] and not isinstance(payload["records"], list):
        raise invalid(f"payload 'records' must be a list, got {describe(payload['records'])}",
                      field="records")
    instances = ([(None, payload["document"])] if given == ["document"]
                 else list(enumerate(payload["records"])))
    validator = re2_validator(validator_class, schema, patterns, check_formats)
    errors: list[dict[str, Any]] = []
    count = 0
    invalid_records: set[int] = set()
    for record, instance in instances:
        for error in _errors_of(validator, instance):
            count += 1
            if record is not None:
                invalid_records.add(record)
            if len(errors) < max_errors:
                entry: dict[str, Any] = {} if record is None else {"record": record}
                entry.update(path=_pointer(error.absolute_path),
                             schema_path=_pointer(error.absolute_schema_path),
                             message=_clipped(error.message), validator=error.validator)
                errors.append(entry)
    result: dict[str, Any] = {"operation": "schema", "valid": count == 0,
                              "draft": DRAFTS[validator_class], "error_count": count,
                              "errors": errors, "truncated": count > len(errors)}
    if given == ["records"]:
        result.update(record_count=len(instances),
                      valid_record_count=len(instances) - len(invalid_records),
                      invalid_record_count=len(invalid_records))
    return result


# ------------------------------------------------------------------------------ data quality

def _as_text(value: Cell) -> str:
    """A cell as `pattern` and `length` see it: numbers as written in JSON, true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _is_number(value: Cell) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_test(name: str, from_csv: bool) -> Callable[[Cell], bool]:
    if name == "number":
        return _is_number
    if name == "integer":
        return lambda v: _is_number(v) and (isinstance(v, int) or float(v).is_integer())
    if name == "string":
        return lambda v: isinstance(v, str)
    return lambda v: isinstance(v, bool) or (
        from_csv and isinstance(v, str) and v.strip().lower() in ("true", "false"))


@dataclass(frozen=True)
class Rule:
    """One checked quality rule. `accepts` judges one non-null cell (unused by not_null/unique)."""

    index: int
    name: str
    column: str
    check: str
    params: dict[str, Any]
    accepts: Callable[[Cell], bool] = lambda value: True


def _number_param(spec: dict[str, Any], key: str, where: str) -> int | float | None:
    value = spec.get(key)
    if value is not None and not (_is_number(value) and is_scalar(value)):
        raise invalid(f"{where}: {key!r} must be a number, got {describe(value)}", field="rules")
    return value


def _length_param(spec: dict[str, Any], key: str, where: str) -> int | None:
    value = spec.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise invalid(f"{where}: {key!r} must be a whole number >= 0, got {describe(value)}",
                      field="rules")
    return value


def _compiled_pattern(regex: Any, where: str, field: str) -> CompiledPattern:
    """The rule's pattern on RE2 (linear time); `field` names it, like `rules[2].regex`."""
    if not isinstance(regex, str) or not regex:
        raise invalid(f"{where}: 'regex' must be a non-empty regular expression, got "
                      f"{describe(regex)}", field=field)
    if len(regex) > MAX_PATTERN_LENGTH:
        raise invalid(f"{where}: 'regex' is {len(regex)} characters; at most "
                      f"{MAX_PATTERN_LENGTH}", field=field, limit=MAX_PATTERN_LENGTH)
    return compile_pattern(regex, field)


def _rule(index: int, spec: Any, table: Table) -> Rule:
    where = f"rule {index}"
    if not isinstance(spec, dict) or not isinstance(spec.get("column"), str):
        raise invalid(f"{where} must be an object with a 'column' and a 'check', like "
                      '{"column": "age", "check": "range", "min": 0}', field="rules", rule=index)
    column = spec["column"]
    if column not in table.columns:
        raise unknown_column(column, table, where)
    named = spec.get("check")
    check = re.sub(r"[\s-]+", "_", named.strip().lower()) if isinstance(named, str) else named
    check = _CHECK_ALIASES.get(check, check) if isinstance(check, str) else None
    if check not in CHECKS:
        raise invalid(f"{where} ({column!r}) has unknown check {named!r}; accepted: "
                      f"{', '.join(CHECKS)}", field="rules", rule=index, accepted=list(CHECKS))
    where = f"rule {index} ({column!r} {check})"
    spec = dict(spec)
    pattern_field = f"rules[{index}].regex"
    if check == "pattern" and "pattern" in spec and "regex" not in spec:
        spec["regex"] = spec.pop("pattern")
        pattern_field = f"rules[{index}].pattern"
    accepted = _PARAMETERS[check]
    unknown = [key for key in spec if key not in _RULE_KEYS and key not in accepted]
    if unknown:
        takes = f"takes {', '.join(map(repr, accepted))}" if accepted else "takes no parameters"
        raise invalid(f"{where} has unknown parameter {unknown[0]!r}; this check {takes} "
                      "besides 'column', 'check' and 'name'", field="rules", rule=index)
    name = spec.get("name", f"{column} {check}")
    if not isinstance(name, str) or not name:
        raise invalid(f"{where}: 'name' must be non-empty text, got {describe(name)}",
                      field="rules")
    params = {key: spec[key] for key in accepted if key in spec}
    accepts = _acceptance(check, params, where, table, pattern_field)
    return Rule(index, name, column, check, params, accepts)


def _acceptance(check: str, params: dict[str, Any], where: str, table: Table,
                pattern_field: str) -> Callable[[Cell], bool]:
    """The per-cell test of a check, after its parameters are checked."""
    if check == "type":
        kind = params.get("type")
        kind = _TYPE_ALIASES.get(kind, kind) if isinstance(kind, str) else kind
        if kind not in VALUE_TYPES:
            raise invalid(f"{where}: 'type' must be one of {', '.join(VALUE_TYPES)}, got "
                          f"{describe(params.get('type'))}", field="rules",
                          accepted=list(VALUE_TYPES))
        params["type"] = kind
        return _type_test(kind, table.lines is not None)
    if check == "range":
        low, high = _number_param(params, "min", where), _number_param(params, "max", where)
        if low is None and high is None:
            raise invalid(f"{where} needs 'min', 'max' or both", field="rules")
        if low is not None and high is not None and low > high:
            raise invalid(f"{where}: 'min' {low} is above 'max' {high}", field="rules")
        return lambda v: (_is_number(v) and (low is None or v >= low)
                          and (high is None or v <= high))
    if check == "pattern":
        compiled = _compiled_pattern(params.get("regex"), where, pattern_field)
        return lambda v: compiled.search(_as_text(v)) is not None
    if check == "allowed_values":
        values = params.get("values")
        if (not isinstance(values, list) or not values
                or not all(is_scalar(value) for value in values)):
            raise invalid(f"{where} needs 'values': a non-empty list of allowed scalars, got "
                          f"{describe(values)}", field="rules")
        if len(values) > MAX_ALLOWED_VALUES:
            raise invalid(f"{where}: 'values' has {len(values)} entries; at most "
                          f"{MAX_ALLOWED_VALUES}", field="rules")
        keys = frozenset(cell_key(value) for value in values)
        return lambda v: cell_key(v) in keys
    if check == "length":
        shortest = _length_param(params, "min_length", where)
        longest = _length_param(params, "max_length", where)
        if shortest is None and longest is None:
            raise invalid(f"{where} needs 'min_length', 'max_length' or both", field="rules")
        if shortest is not None and longest is not None and shortest > longest:
            raise invalid(f"{where}: 'min_length' {shortest} is above 'max_length' {longest}",
                          field="rules")
        return lambda v: ((shortest is None or len(_as_text(v)) >= shortest)
                          and (longest is None or len(_as_text(v)) <= longest))
    return lambda value: True


def _is_missing(value: Cell) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def evaluate_rule(rule: Rule, table: Table, max_failures: int) -> tuple[dict[str, Any], list[int]]:
    """The rule's report, and the indices of every row it failed."""
    cells = [row[rule.column] for row in table.rows]
    extra: dict[str, Any] = {}
    if rule.check == "not_null":
        checked = len(cells)
        failing = [index for index, value in enumerate(cells) if _is_missing(value)]
    else:
        present = [(index, value) for index, value in enumerate(cells) if value is not None]
        checked = len(present)
        if rule.check == "unique":
            counts = Counter(cell_key(value) for _, value in present)
            failing = [index for index, value in present if counts[cell_key(value)] > 1]
            extra["duplicate_values"] = sum(1 for count in counts.values() if count > 1)
        else:
            failing = [index for index, value in present if not rule.accepts(value)]
    failures = []
    for index in failing[:max_failures]:
        failure: dict[str, Any] = {"row": index, "value": cells[index]}
        if table.lines is not None:
            failure["line"] = table.lines[index]
        failures.append(failure)
    report = {"name": rule.name, "column": rule.column, "check": rule.check,
              "params": rule.params, "passed": not failing, "checked": checked,
              "failed": len(failing),
              "failure_ratio": round(len(failing) / checked, 6) if checked else 0.0,
              **extra, "failures": failures, "failures_truncated": len(failing) > len(failures)}
    return report, failing


def check_quality(payload: dict[str, Any]) -> dict[str, Any]:
    """Each rule's verdict over the table, and whether all of them passed."""
    rules = payload.get("rules")
    if not isinstance(rules, list) or not rules:
        raise invalid("quality check needs payload 'rules': a non-empty list like "
                      '[{"column": "email", "check": "not_null"}]; checks: '
                      f"{', '.join(CHECKS)}", field="rules", accepted=list(CHECKS))
    if len(rules) > MAX_RULES:
        raise invalid(f"payload 'rules' has {len(rules)} entries; at most {MAX_RULES}",
                      field="rules", limit=MAX_RULES)
    table = payload_table(payload, "quality check")
    max_failures = _bounded_count(payload, "max_failures", DEFAULT_MAX_FAILURES)
    checked_rules = [_rule(index, spec, table) for index, spec in enumerate(rules)]
    reports = []
    failing_rows: set[int] = set()
    for rule in checked_rules:
        report, failing = evaluate_rule(rule, table, max_failures)
        reports.append(report)
        failing_rows.update(failing)
    passed = sum(1 for report in reports if report["passed"])
    return {"operation": "quality", "passed": passed == len(reports),
            "summary": {"rules": len(reports), "rules_passed": passed,
                        "rules_failed": len(reports) - passed, "rows": len(table.rows),
                        "rows_with_failures": len(failing_rows),
                        "failed_cells": sum(report["failed"] for report in reports)},
            "rules": reports}


def validate(payload: dict[str, Any], description: str = "") -> dict[str, Any]:
    """Run the task's operation: the agent's work, without the async shell."""
    if OPERATION_CHOOSER.choose(payload, description) == "schema":
        return validate_schema(payload)
    return check_quality(payload)


class Validation(Agent):
    """JSON Schema validation of documents and records, and data-quality rules over tables."""

    spec = AgentSpec(
        name="validation",
        description="Validates data: checks JSON documents or lists of records against a JSON "
        "Schema and reports every violation with its JSON-pointer path, and runs data-quality "
        "rules (not null, unique, type, range, regex pattern, allowed values, length) over "
        "tables given as JSON rows or CSV, reporting failing rows and failure ratios.",
        capabilities=(
            "validate a JSON document against a JSON Schema",
            "validate a list of records against a schema and find the invalid ones",
            "check that a JSON Schema itself is well formed",
            "data quality checks for missing values and nulls",
            "find duplicate values in a column that should be unique",
            "check column types, numeric ranges, regex patterns and allowed values",
            "check text length limits in a column",
            "report failing rows and failure ratios per quality rule",
            "check that required fields are present and not empty",
            "check formats of emails, dates, codes and identifiers",
            "check that values stay within limits or come from an allowed list",
        ),
        examples=(
            "Validate this JSON against the schema",
            "Does this document conform to the JSON Schema?",
            "Check these API responses against our OpenAPI component schema",
            "Which of these records fail the schema?",
            "Validate the config file using draft-07 rules",
            "Is my JSON Schema itself valid?",
            "Run data quality checks on this CSV",
            "Make sure no email is null and every id is unique",
            "Find duplicate order ids in this table",
            "Check that age is between 0 and 120",
            "Verify every country code matches ^[A-Z]{2}$",
            "Flag rows whose status is not one of active, paused or closed",
            "Check that the price column only holds numbers",
            "Ensure product names are at most 80 characters long",
            "How many rows have missing values in the phone column?",
            "Report the failure rate of each data quality rule",
            "Are the zip codes all five characters?",
            "check this JSON against the schema and list every error",
            "does this payload satisfy the schema?",
            "validate these records against the JSON Schema",
            "validate these events against the event schema",
            "lint my JSON Schema",
            "check that every object has the required fields",
            "is any record missing a mandatory field?",
            "every record needs a non-empty name",
            "check that no value in the email column is empty",
            "make sure the id column has no duplicates",
            "are all the values in the date column valid dates?",
            "check the timestamps are ISO 8601",
            "check that every amount is a number",
            "check that the rating is between 1 and 5",
            "make sure scores never go above 100",
            "is the weight always positive?",
            "does the percentage column stay between 0 and 100?",
            "does every email look like a valid address?",
            "are the phone numbers in a valid format?",
            "the consent column may only be yes or no, check it",
            "is the unit always kg or lb?",
            "names must be shorter than 50 characters, check them",
            "data quality rules: id not null, email unique",
            "how many rows fail the not-null check",
            "is this data clean? check types, nulls and duplicates",
            "sanity-check this dataset before we load it",
            "check that every flight number is two letters followed by four digits",
            "make sure every patient record has a date of birth",
            "check that every grade is one of A, B, C, D or F",
            "verify that each employee has a unique badge number",
            "check the tracking numbers are all 12 characters long",
            "every SKU must be unique and every price above zero, check it",
            "check that the currency code is always three capital letters",
            "flag sensor readings where humidity is outside 0 to 100",
            "validate these clickstream events against our event schema",
            "check that all survey answers are between 1 and 10",
            "make sure the number of bedrooms is a whole number and not negative",
            "check that interest rates are between 0 and 30 percent",
            "are any lead emails missing or malformed?",
            "check that no ticket is missing an assignee",
            "check that wind speed is never negative",
            "check that release years are four-digit numbers",
            "store ids should be unique, check them",
            "is the value always one of the allowed options?",
            "does every row follow the rule that the amount is positive?",
            "the quantity must never exceed 1000, check that",
            "which ids aren't exactly 8 digits long?",
            "are the postcodes properly formatted?",
            "should never be empty: check the name and id columns",
            "confirm the field is present in every record",
            "are all the values numbers?",
            "any nulls in the customer_id column?",
            "does each record have an id, a name and an email?",
            "which rows break the rule that stock can't be negative",
            "check the country column only uses ISO codes",
            "is the JSON well formed and does it match the contract schema?",
            "make sure the status field is always filled in",
            "do all the URLs in this column start with https?",
            "how many records are missing a phone number",
            "check column types: id integer, name string, price number",
            "the discount must stay between 0 and 1; which rows break that?",
            "is the gender column limited to M, F or X?",
            "report rows where the quantity isn't a whole number",
            "are the IBANs all the right length?",
        ),
        resources=Resources(num_cpus=0.1),
        concurrency=8,
        replicas=1,
        payload_hint={"operation": "schema",
                      "schema": {"type": "object", "required": ["id", "email"],
                                 "properties": {"id": {"type": "integer"},
                                                "email": {"type": "string"}}},
                      "records": [{"id": 1, "email": "ana@example.com"}, {"id": "two"}]},
    )

    async def run(self, task: AgentTask) -> dict[str, Any]:
        # Schemas over many records and rules over many rows are CPU work: keep the loop free.
        return await asyncio.to_thread(validate, task.payload, task.description or "")
