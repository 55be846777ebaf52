import pytest

from actors.config import OrchestratorConfig
from actors.validation import validate_request
from storage.errors import InvalidRequest
from storage.messages import TaskRequest

CONFIG = OrchestratorConfig(database_url="sqlite://", default_timeout_s=30, max_timeout_s=60,
                            max_payload_bytes=2000)


def test_defaults_are_filled_in():
    request = validate_request(TaskRequest("add", {"a": 1}, "calculator"), CONFIG)
    assert request.timeout_s == 30.0 and request.max_attempts == CONFIG.retry.max_attempts


def test_dicts_are_accepted_but_unknown_fields_are_not():
    assert validate_request({"description": "d"}, CONFIG).description == "d"
    with pytest.raises(InvalidRequest, match="colour is not a task field"):
        validate_request({"description": "d", "colour": "red"}, CONFIG)


@pytest.mark.parametrize("change, message", [
    ({"description": ""}, "description must be a non-empty string"),
    ({"description": "x" * 10_001}, "description is 10001 characters"),
    ({"payload": [1, 2]}, "payload must be a JSON object"),
    ({"payload": {"x": float("nan")}}, "payload is not valid JSON"),
    ({"payload": {"x": "y" * 5000}}, "the limit is 2000"),
    ({"priority": 1000}, "priority must be an integer from -100 to 100"),
    ({"priority": True}, "priority must be an integer"),
    ({"timeout_s": 61}, "timeout_s must be a number of seconds above 0 and at most 60"),
    ({"timeout_s": float("inf")}, "timeout_s must be"),
    ({"max_attempts": 0}, "max_attempts must be an integer from 1 to 20"),
    ({"idempotency_key": ""}, "idempotency_key must be a string of 1 to 200"),
    ({"tenant": "bad tenant!"}, "tenant must be"),
    ({"batch_id": "a/b"}, "batch_id must be"),
    ({"batch_id": "batch\n"}, "batch_id must be"),
    ({"tenant": "acme\n"}, "tenant must be"),
    ({"description": "add\x00"}, "description holds a NUL character"),
    ({"payload": {"rows": [{"name": "a\x00b"}]}},
     r"payload holds a NUL character .* at rows\[0\]\.name"),
    ({"payload": {"k\x00": 1}}, "payload holds a NUL character"),
    ({"idempotency_key": "k\x00"}, "idempotency_key must be"),
])
def test_each_rule_names_the_field(change, message):
    fields = {"description": "add", "payload": {}, "agent_type": "calculator", **change}
    with pytest.raises(InvalidRequest, match=message) as info:
        validate_request(TaskRequest(**fields), CONFIG, index=3)
    assert str(info.value).startswith("task 3: ")
    assert info.value.details["index"] == 3


def _nested(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize("levels", [65, 300, 5000])
def test_a_payload_nested_too_deep_is_refused_naming_the_path(levels):
    """The Python client and batch lines come through here: 5000 levels would break json."""
    request = TaskRequest("deep", {"rows": [_nested(levels)]})
    with pytest.raises(InvalidRequest) as caught:
        validate_request(request, OrchestratorConfig(database_url="sqlite://"))
    details = caught.value.details
    assert details["field"] == "payload" and details["limit"] == 64
    assert details["path"].startswith("payload.rows[0].a.a") and "levels)…" in details["path"]
    assert "payload is nested deeper than 64 levels at payload.rows[0]" in str(caught.value)


def test_the_depth_limit_is_the_configured_one():
    config = OrchestratorConfig(database_url="sqlite://", max_payload_depth=3)
    assert validate_request(TaskRequest("d", {"a": {"b": {"c": 1}}}), config)
    with pytest.raises(InvalidRequest, match=r"deeper than 3 levels at payload\.a\.b\.c$"):
        validate_request(TaskRequest("d", {"a": {"b": {"c": [1]}}}), config)
