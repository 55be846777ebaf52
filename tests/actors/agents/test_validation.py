"""The validation agent: JSON Schema verdicts with pointer paths, quality rules counted by hand."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from actors.agent import Agent
from actors.agents.validation import CHECKS, Validation
from actors.errors import InvalidTaskInput
from storage.messages import AgentTask

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "age": {"type": "integer", "minimum": 0},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}

# Rows 0-5. By hand: id 3 twice (rows 2, 3); email missing in row 1 (null) and row 4 (blank);
# age 130 out of range in row 5; "ten" is not a number in row 3; status "lost" is not allowed.
PEOPLE_CSV = """id,name,age,email,status,zip
1,Ana,34,ana@example.com,active,01234
2,Ben,28,,paused,12345
3,Cai,41,cai@example.com,active,9999
3,Dee,ten,dee@example.com,closed,54321
5,Eli,19,  ,lost,23456
6,Fay,130,fay@example.com,active,34567
"""


def validate(payload: dict[str, Any], description: str = "") -> Any:
    task = AgentTask(task_id="t", attempt=1, agent_type="validation", description=description,
                     payload=payload, timeout_s=10)
    result = asyncio.run(Validation().run(task))
    json.dumps(result, allow_nan=False)  # every result is plain JSON
    return result


def refusal(payload: dict[str, Any], description: str = "") -> str:
    with pytest.raises(InvalidTaskInput) as caught:
        validate(payload, description)
    return str(caught.value)


def rule_report(payload: dict[str, Any], rule: dict[str, Any]) -> dict[str, Any]:
    result = validate({**payload, "operation": "quality", "rules": [rule]})
    return result["rules"][0]


def test_spec_declares_what_the_router_learns_from():
    spec = Validation.spec
    assert spec.name == "validation" and issubclass(Validation, Agent)
    assert len(spec.capabilities) >= 6
    assert len(set(spec.examples)) == len(spec.examples) >= 15
    assert spec.resources.num_cpus == 0.1 and spec.concurrency == 8 and spec.replicas == 1


# ---------------------------------------------------------------------------------- JSON Schema

def test_a_conforming_document_is_valid():
    result = validate({"schema": PERSON, "document": {"name": "Ana", "age": 34, "tags": ["x"]}})
    assert result == {"operation": "schema", "valid": True, "draft": "2020-12", "error_count": 0,
                      "errors": [], "truncated": False}


def test_every_error_is_reported_with_its_json_pointer():
    document = {"age": -1, "email": "not-an-email", "tags": ["ok", 7], "nick": "x"}
    result = validate({"schema": PERSON, "document": document}, "Validate this JSON")
    assert result["valid"] is False and result["error_count"] == 5
    found = {(error["path"], error["validator"]) for error in result["errors"]}
    assert found == {("/age", "minimum"), ("/email", "format"), ("/tags/1", "type"),
                     ("", "required"), ("", "additionalProperties")}
    by_path = {error["path"]: error for error in result["errors"]}
    assert by_path["/tags/1"]["message"] == "7 is not of type 'string'"
    assert by_path["/tags/1"]["schema_path"] == "/properties/tags/items/type"
    by_validator = {error["validator"]: error for error in result["errors"]}
    assert by_validator["required"]["message"] == "'name' is a required property"


def test_pointer_segments_are_escaped():
    schema = {"properties": {"a/b": {"properties": {"c~d": {"type": "integer"}}}}}
    result = validate({"schema": schema, "document": {"a/b": {"c~d": "x"}}})
    assert [error["path"] for error in result["errors"]] == ["/a~1b/c~0d"]


def test_records_are_validated_one_by_one():
    records = [{"name": "Ana", "age": 34}, {"name": "", "age": 3.5}, {"name": "Cai", "age": 41},
               {"age": 2}]
    result = validate({"schema": PERSON, "records": records}, "Which records fail the schema?")
    assert result["record_count"] == 4 and result["valid_record_count"] == 2
    assert result["invalid_record_count"] == 2 and result["error_count"] == 3
    assert [(e["record"], e["path"], e["validator"]) for e in result["errors"]] == [
        (1, "/name", "minLength"), (1, "/age", "type"), (3, "", "required")]


def test_errors_are_capped_but_all_counted():
    records = [{"name": "x", "age": -n} for n in range(1, 8)]
    result = validate({"schema": PERSON, "records": records, "max_errors": 3})
    assert result["error_count"] == 7 and len(result["errors"]) == 3 and result["truncated"]
    assert [error["record"] for error in result["errors"]] == [0, 1, 2]


def test_the_draft_named_by_dollar_schema_is_used():
    tuple_items = {"type": "array", "items": [{"type": "integer"}, {"type": "string"}]}
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", **tuple_items}
    result = validate({"schema": draft7, "document": [1, 2]})
    assert result["draft"] == "draft-07" and result["error_count"] == 1
    assert result["errors"][0]["path"] == "/1"
    # Draft 2020-12 (the default) replaced array-valued "items" with "prefixItems".
    message = refusal({"schema": tuple_items, "document": [1, 2]})
    assert "not a valid 2020-12 JSON Schema" in message and "at /items" in message


def test_formats_can_be_left_unchecked():
    payload = {"schema": PERSON, "document": {"name": "A", "age": 1, "email": "nope"}}
    assert validate(payload)["errors"][0]["validator"] == "format"
    assert validate({**payload, "check_formats": False})["valid"] is True


def test_local_references_resolve_and_remote_ones_are_never_fetched():
    schema = {"$defs": {"positive": {"type": "number", "exclusiveMinimum": 0}},
              "type": "array", "items": {"$ref": "#/$defs/positive"}}
    result = validate({"schema": schema, "document": [1, 0, 2]})
    assert [error["path"] for error in result["errors"]] == ["/1"]
    remote = {"$ref": "http://127.0.0.1:9/person.json"}
    message = refusal({"schema": remote, "document": {}})
    assert "$ref cannot be resolved" in message and "never fetched" in message


@pytest.mark.parametrize("schema, fragments", [
    ({"type": "integr"}, ("not a valid 2020-12 JSON Schema", "at /type")),
    ({"properties": {"age": {"minimum": "zero"}}},
     ("at /properties/age/minimum", "'zero' is not of type 'number'")),
    ({"required": "name"}, ("at /required", "'name' is not of type 'array'")),
    ({"pattern": "(["}, ("schema.pattern", "is not a valid regular expression")),
    ({"$schema": "http://json-schema.org/draft-04/schema#", "exclusiveMinimum": 5},
     ("not a valid draft-04 JSON Schema", "5 is not of type 'boolean'")),
    ({"$schema": "https://example.com/my-draft"},
     ("'$schema' 'https://example.com/my-draft' names no draft",
      "http://json-schema.org/draft-07/schema#")),
    ("{\"type\": \"object\"}", ("must be a JSON Schema (an object or a boolean), got the text",)),
    ([{"type": "object"}], ("must be a JSON Schema", "got a list")),
])
def test_malformed_schemas_are_refused_before_validating(schema, fragments):
    message = refusal({"operation": "schema", "schema": schema, "document": {}})
    for fragment in fragments:
        assert fragment in message


def test_schema_inputs_are_required_and_exclusive():
    assert "needs payload 'schema'" in refusal({"operation": "schema", "document": 1})
    assert "needs one of payload 'document'" in refusal({"schema": PERSON})
    assert "gives both" in refusal({"schema": PERSON, "document": {}, "records": []})
    assert "'records' must be a list, got an object" in refusal(
        {"schema": PERSON, "records": {"name": "A"}})
    assert "'max_errors' must be a whole number from 0 to 10000" in refusal(
        {"schema": PERSON, "document": {}, "max_errors": -1})


def test_boolean_schemas_and_null_documents():
    assert validate({"schema": True, "document": None})["valid"] is True
    result = validate({"schema": False, "document": None})
    assert result["error_count"] == 1 and result["errors"][0]["validator"] is None


# --------------------------------------------------------------------------------- data quality

def test_quality_report_over_csv():
    rules = [
        {"column": "id", "check": "unique"},
        {"column": "email", "check": "not_null", "name": "email present"},
        {"column": "age", "check": "range", "min": 0, "max": 120},
        {"column": "status", "check": "allowed_values", "values": ["active", "paused", "closed"]},
        {"column": "name", "check": "length", "min_length": 2, "max_length": 10},
    ]
    result = validate({"csv": PEOPLE_CSV, "rules": rules}, "Run data quality checks on this CSV")
    assert result["operation"] == "quality" and result["passed"] is False
    by_name = {report["name"]: report for report in result["rules"]}
    unique = by_name["id unique"]
    assert (unique["checked"], unique["failed"], unique["duplicate_values"]) == (6, 2, 1)
    assert unique["failures"] == [{"row": 2, "value": 3, "line": 4},
                                  {"row": 3, "value": 3, "line": 5}]
    email = by_name["email present"]
    assert (email["checked"], email["failed"], email["failure_ratio"]) == (6, 2, 0.333333)
    assert [failure["row"] for failure in email["failures"]] == [1, 4]
    age = by_name["age range"]
    assert (age["checked"], age["failed"]) == (6, 2)
    assert [(f["row"], f["value"]) for f in age["failures"]] == [(3, "ten"), (5, 130)]
    status = by_name["status allowed_values"]
    assert status["failures"] == [{"row": 4, "value": "lost", "line": 6}]
    assert by_name["name length"]["passed"] is True and by_name["name length"]["failed"] == 0
    assert result["summary"] == {"rules": 5, "rules_passed": 1, "rules_failed": 4, "rows": 6,
                                 "rows_with_failures": 5, "failed_cells": 7}


def test_nulls_are_left_to_not_null():
    rows = [{"age": 5}, {"age": None}, {"age": -1}]
    report = rule_report({"rows": rows}, {"column": "age", "check": "range", "min": 0})
    assert (report["checked"], report["failed"], report["failure_ratio"]) == (2, 1, 0.5)
    assert report["failures"] == [{"row": 2, "value": -1}]


@pytest.mark.parametrize("kind, values, failing_rows", [
    ("number", [1, 2.5, "3", True, None], [2, 3]),
    ("integer", [1, 2.0, 2.5, "4", None], [2, 3]),
    ("string", ["a", "", 3, False], [2, 3]),
    ("boolean", [True, False, "true", 0], [2, 3]),
    ("int", [1, 1.5], [1]),
])
def test_type_checks(kind, values, failing_rows):
    report = rule_report({"rows": [{"v": value} for value in values]},
                         {"column": "v", "check": "type", "type": kind})
    assert [failure["row"] for failure in report["failures"]] == failing_rows


def test_boolean_text_in_csv_counts_as_boolean():
    report = rule_report({"csv": "flag\ntrue\nFALSE\nyes\n1\n"},
                         {"column": "flag", "check": "type", "type": "boolean"})
    assert [failure["value"] for failure in report["failures"]] == ["yes", 1]


def test_pattern_searches_cells_as_text():
    report = rule_report({"csv": PEOPLE_CSV},
                         {"column": "zip", "check": "pattern", "regex": r"^\d{5}$"})
    # "01234" stays text; the other zips are read as numbers and matched as written.
    assert (report["checked"], report["failed"]) == (6, 1)
    assert report["failures"] == [{"row": 2, "value": 9999, "line": 4}]
    unanchored = rule_report({"rows": [{"s": "xab"}, {"s": "b"}]},
                             {"column": "s", "check": "regex", "pattern": "ab"})
    assert [failure["row"] for failure in unanchored["failures"]] == [1]


def test_allowed_values_compare_by_kind():
    rows = [{"v": 1}, {"v": 1.0}, {"v": True}, {"v": "1"}, {"v": 2}]
    report = rule_report({"rows": rows}, {"column": "v", "check": "in", "values": [1, "x"]})
    assert [failure["row"] for failure in report["failures"]] == [2, 3, 4]
    assert report["check"] == "allowed_values"


def test_failures_listed_are_capped():
    rows = [{"v": None}] * 30
    result = validate({"rows": rows, "rules": [{"column": "v", "check": "not_null"}]})
    report = result["rules"][0]
    assert report["failed"] == 30 and len(report["failures"]) == 20
    assert report["failures_truncated"] is True
    capped = validate({"rows": rows, "rules": [{"column": "v", "check": "required"}],
                       "max_failures": 2})
    assert [failure["row"] for failure in capped["rules"][0]["failures"]] == [0, 1]


def test_a_clean_table_passes():
    result = validate({"rows": [{"id": 1}, {"id": 2}], "rules": [
        {"column": "id", "check": "unique"}, {"column": "id", "check": "not_null"}]})
    assert result["passed"] is True and result["summary"]["rows_with_failures"] == 0


def test_unknown_check_is_named_with_the_options():
    message = refusal({"rows": [{"a": 1}], "rules": [{"column": "a", "check": "positive"}]})
    assert "rule 0 ('a') has unknown check 'positive'" in message
    assert ", ".join(CHECKS) in message


def test_unknown_column_is_named_with_the_available_ones():
    message = refusal({"csv": PEOPLE_CSV, "rules": [{"column": "mail", "check": "not_null"}]})
    assert "unknown column 'mail' in rule 0" in message and "'email'" in message


@pytest.mark.parametrize("rule, fragment", [
    ({"column": "a", "check": "type", "type": "date"},
     "'type' must be one of number, integer, string, boolean, got the text 'date'"),
    ({"column": "a", "check": "range"}, "needs 'min', 'max' or both"),
    ({"column": "a", "check": "range", "min": 5, "max": 1}, "'min' 5 is above 'max' 1"),
    ({"column": "a", "check": "range", "min": "0"}, "'min' must be a number, got the text '0'"),
    ({"column": "a", "check": "range", "minimum": 0},
     "unknown parameter 'minimum'; this check takes 'min', 'max'"),
    ({"column": "a", "check": "unique", "values": [1]}, "this check takes no parameters"),
    ({"column": "a", "check": "pattern", "regex": "(["}, "is not a valid regular expression"),
    ({"column": "a", "check": "pattern", "regex": "x" * 501}, "'regex' is 501 characters; at most"),
    ({"column": "a", "check": "allowed_values", "values": []}, "needs 'values': a non-empty list"),
    ({"column": "a", "check": "length", "min_length": -1}, "'min_length' must be a whole number"),
    ({"column": "a"}, "has unknown check None"),
    ({"check": "unique"}, "rule 0 must be an object with a 'column' and a 'check'"),
])
def test_bad_rules_are_refused_with_what_is_wrong(rule, fragment):
    assert fragment in refusal({"rows": [{"a": 1}], "rules": [rule]})


def test_quality_needs_rules_and_one_table():
    assert "needs payload 'rules'" in refusal({"operation": "quality", "rows": [{"a": 1}]})
    assert "needs a table" in refusal({"rules": [{"column": "a", "check": "unique"}]})
    message = refusal({"rows": [{"a": [1]}], "rules": [{"column": "a", "check": "unique"}]})
    assert "rows[0] column 'a' holds a list" in message


# ------------------------------------------------------------------------------------ operation

def test_operation_is_inferred_or_refused_with_the_options():
    assert validate({"schema": {}, "document": 1})["operation"] == "schema"
    rows = {"rows": [{"a": 1}], "rules": [{"column": "a", "check": "unique"}]}
    assert validate(rows)["operation"] == "quality"
    assert validate({**rows, "operation": "data_quality"})["operation"] == "quality"
    message = refusal({**rows, "operation": "lint"})
    assert "unknown operation 'lint'; accepted: schema, quality" in message
    assert "cannot tell which operation to run" in refusal({"rows": []}, "check this")
