from __future__ import annotations

import importlib
import json
import pickle
import re
from pathlib import Path

import pytest

import actors.errors
import ml.errors
import serve_apps.errors
import storage.errors
from actors.errors import PlatformUnavailable, QueueFull, ReplicaLost
from ml.errors import EmbeddingModelUnavailable, NoConfidentRoute
from serve_apps.errors import MethodNotAllowed, RateLimited, Unauthenticated
from serve_apps.http_errors import HTTP_RULES, envelope, headers_for, status_for
from storage.errors import InvalidRequest, NotFound, StorageError, YmeraError

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("storage", "actors", "ml", "serve_apps", "cluster")
ERRORS_MODULES = (storage.errors, actors.errors, ml.errors, serve_apps.errors)

# code -> (status, shown code); independent of the module's table.
EXPECTED = {
    "invalid_request": (400, "invalid_request"),
    "unauthenticated": (401, "unauthenticated"),
    "forbidden": (403, "forbidden"),
    "not_found": (404, "not_found"),
    "method_not_allowed": (405, "method_not_allowed"),
    "conflict": (409, "conflict"),
    "payload_too_large": (413, "payload_too_large"),
    "no_confident_route": (422, "no_confident_route"),
    "invalid_task_input": (422, "invalid_task_input"),
    "queue_full": (429, "queue_full"),
    "rate_limited": (429, "rate_limited"),
    "platform_unavailable": (503, "platform_unavailable"),
    "router_unavailable": (503, "router_unavailable"),
    "embedding_model_unavailable": (503, "embedding_model_unavailable"),
    "storage_error": (503, "storage_error"),
    "schema_out_of_date": (503, "schema_out_of_date"),
    "llm_config_error": (400, "llm_config_error"),
    "no_model_configured": (422, "no_model_configured"),
    "bad_model_request": (422, "bad_model_request"),
    "plan_refused": (422, "plan_refused"),
    "budget_exceeded": (429, "budget_exceeded"),
    "token_budget_exceeded": (429, "token_budget_exceeded"),
    "llm_error": (502, "llm_error"),
    "provider_unavailable": (502, "provider_unavailable"),
    "no_deployment_answered": (502, "no_deployment_answered"),
    "stream_broken": (502, "stream_broken"),
    "provider_timeout": (504, "provider_timeout"),
    "error": (500, "internal_error"),
    "agent_error": (500, "internal_error"),
    "retryable_agent_error": (500, "internal_error"),
    "replica_lost": (500, "internal_error"),
    "call_failed": (500, "internal_error"),
    "timeout": (500, "internal_error"),
    "cancelled": (500, "internal_error"),
}


def platform_errors() -> list[type[YmeraError]]:
    """The error classes of the packages' errors modules (subclasses defined elsewhere, such as
    an agent's own input error, inherit their parent's code and rule; `codes_in_source` makes
    sure any code of their own is mapped too). Which other modules happen to be imported must
    not change this list."""
    names = {module.__name__ for module in ERRORS_MODULES}
    for name in names:
        importlib.import_module(name)
    found, pending = [], [YmeraError]
    while pending:
        cls = pending.pop()
        if cls.__module__ in names:
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


def codes_in_source() -> set[str]:
    pattern = re.compile(r'^\s+code = "([a-z_]+)"', re.MULTILINE)
    return {code for package in PACKAGES for path in (ROOT / package).rglob("*.py")
            for code in pattern.findall(path.read_text(encoding="utf-8"))}


@pytest.mark.parametrize("error", platform_errors(), ids=lambda cls: cls.__qualname__)
def test_every_platform_error_has_its_own_explicit_rule(error: type[YmeraError]) -> None:
    assert "code" in vars(error), f"{error.__qualname__} has no code of its own"
    assert error.code in HTTP_RULES and error.code in EXPECTED
    exc = error("something broke at 10.0.0.7:6379")
    status, shown = EXPECTED[error.code]
    body = envelope(exc, "req-1")
    assert status_for(exc) == status and body["error"]["code"] == shown
    assert body["error"]["request_id"] == "req-1"
    json.dumps(body)
    if status >= 500:
        assert "10.0.0.7" not in json.dumps(body)


def test_every_code_in_the_source_is_mapped() -> None:
    codes = codes_in_source()
    assert {"invalid_request", "queue_full", "no_confident_route", "rate_limited"} <= codes
    assert codes - set(HTTP_RULES) == set()
    assert set(HTTP_RULES) == set(EXPECTED)


def test_a_client_error_shows_its_message_and_details() -> None:
    exc = InvalidRequest("priority must be between 0 and 9", {"field": "priority"})
    assert envelope(exc, "r") == {"error": {
        "code": "invalid_request", "message": "priority must be between 0 and 9",
        "details": {"field": "priority"}, "request_id": "r"}}
    assert headers_for(exc) == {} and headers_for(NotFound("no task")) == {}


def test_a_server_error_hides_its_message_and_details() -> None:
    exc = StorageError("connect to postgresql://ymera:hunter2@db failed", {"dsn": "hunter2"})
    body = envelope(exc, None)["error"]
    assert body == {"code": "storage_error", "message": "storage is unavailable",
                    "details": {"retry_after_s": 5}, "request_id": None}


@pytest.mark.parametrize("exc", [RuntimeError("/srv/app/secret.py line 3"), KeyError("token"),
                                 ReplicaLost("actor 1a2b on node 10.0.0.7 died")])
def test_anything_unknown_or_internal_is_a_generic_500(exc: BaseException) -> None:
    assert status_for(exc) == 500 and headers_for(exc) == {}
    assert envelope(exc, "r") == {"error": {"code": "internal_error", "message": "internal error",
                                            "details": {}, "request_id": "r"}}


@pytest.mark.parametrize(("exc", "seconds"), [
    (QueueFull("queue full", {"queued": 5}, retry_after_s=2.2), 3),
    (QueueFull("queue full"), 1),
    (RateLimited("too many requests", retry_after_s=0.1), 1),
    (RateLimited("too many requests", retry_after_s=30), 30),
    (PlatformUnavailable("the router failed: boom"), 5),
    (StorageError("reading from the database failed: connection refused"), 5),
])
def test_back_pressure_says_when_to_retry(exc: YmeraError, seconds: int) -> None:
    assert headers_for(exc) == {"Retry-After": str(seconds)}
    assert envelope(exc, "r")["error"]["details"]["retry_after_s"] == seconds


def test_queue_full_keeps_its_details() -> None:
    body = envelope(QueueFull("queue full", {"queued": 5}, retry_after_s=2), "r")["error"]
    assert body["details"] == {"queued": 5, "retry_after_s": 2}


def test_unauthenticated_asks_for_a_bearer_token() -> None:
    exc = Unauthenticated("token expired")
    assert status_for(exc) == 401 and headers_for(exc) == {"WWW-Authenticate": "Bearer"}
    assert envelope(exc, "r")["error"]["message"] == "token expired"


def test_routing_and_model_failures() -> None:
    assert status_for(NoConfidentRoute("no agent type fits")) == 422
    body = envelope(EmbeddingModelUnavailable("files missing under /opt/models"), "r")["error"]
    assert body["message"] == "the task router is unavailable" and "/opt" not in json.dumps(body)


class BrandNewStorageFailure(StorageError):
    code = "brand_new_storage_failure"


class BrandNewError(YmeraError):
    code = "brand_new"


def test_an_unmapped_error_falls_back_to_its_nearest_mapped_ancestor() -> None:
    storage_failure = BrandNewStorageFailure("disk full at /var/lib/ymera")
    assert status_for(storage_failure) == 503
    assert envelope(storage_failure, "r")["error"]["message"] == "storage is unavailable"
    assert status_for(BrandNewError("what")) == 500
    assert envelope(BrandNewError("what"), "r")["error"]["code"] == "internal_error"


def test_a_wrong_method_names_the_allowed_ones() -> None:
    exc = MethodNotAllowed("DELETE is not allowed here", {"method": "DELETE"}, allowed="GET, POST")
    assert status_for(exc) == 405 and headers_for(exc) == {"Allow": "GET, POST"}
    assert envelope(exc, "r")["error"]["details"] == {"method": "DELETE"}
    copy = pickle.loads(pickle.dumps(exc))
    assert copy.allowed == "GET, POST" and copy.message == exc.message
    assert headers_for(MethodNotAllowed("no")) == {}
