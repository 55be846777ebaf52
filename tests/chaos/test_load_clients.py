"""The load's clients behave like real ones: an error is recorded with its type and code, and the
retry uses the same idempotency key; a key answered with two ids is a duplicate at once; only the
documented retryable errors count as expected."""

from __future__ import annotations

import threading

import httpx

from actors.errors import PlatformUnavailable, QueueFull
from cluster.chaos.load import (
    SERVE_ERROR, Ack, HttpError, LoadRecord, LoadWorker, Operation, classify, http_error,
)
from storage.errors import InvalidRequest


def test_errors_are_retried_with_the_same_key_until_acknowledged() -> None:
    calls: list[str] = []
    stop = threading.Event()

    def flaky_submit(operation: Operation, tenant: str, key: str) -> str:
        calls.append(key)
        if len(calls) <= 2:
            raise PlatformUnavailable("the orchestrator is restarting")
        stop.set()
        return f"id-for-{key}"

    record = LoadRecord()
    worker = LoadWorker("w", "python", 3, flaky_submit, record, stop, pause_s=0)
    worker.run()
    assert calls == ["chaos-w-0"] * 3
    [ack] = record.acks.values()
    assert (ack.key, ack.id, ack.tries) == ("chaos-w-0", "id-for-chaos-w-0", 3)
    assert record.errors_by_kind() == {"PlatformUnavailable(platform_unavailable)": 2}
    assert all(error.retryable for error in record.errors)


def test_a_key_that_stays_unanswered_is_given_up_after_the_window() -> None:
    stop = threading.Event()
    stop.set()  # the load is over: only the retry window is left

    def down(operation: Operation, tenant: str, key: str) -> str:
        raise QueueFull("full", retry_after_s=0.01)

    record = LoadRecord()
    worker = LoadWorker("w", "python", 3, down, record, stop, pause_s=0)
    worker.give_up_at = 0.0
    worker._until_acked(Operation("task", "d", {}), "chaos-a", "k1")
    assert record.given_up == [("chaos-a", "k1")] and not record.acks


def test_a_key_answered_with_two_ids_is_a_duplicate() -> None:
    record = LoadRecord()
    record.acked(Ack("chaos-a", "k", "task", "python", "id1", None, 0.0, 1.0, 1))
    record.acked(Ack("chaos-a", "k", "task", "http", "id1", None, 0.0, 2.0, 1))
    assert record.duplicates == []
    record.acked(Ack("chaos-a", "k", "task", "http", "id2", None, 0.0, 3.0, 1))
    assert record.duplicates == [{"tenant": "chaos-a", "key": "k", "ids": ["id1", "id2"]}]
    assert record.acks[("chaos-a", "k")].id == "id1"


def test_only_documented_errors_are_retryable() -> None:
    assert classify(PlatformUnavailable("x")) == ("PlatformUnavailable", "platform_unavailable",
                                                  True)
    assert classify(HttpError(503, "storage_error", "down"))[2]
    assert classify(HttpError(429, "rate_limited", "slow down"))[2]
    assert classify(httpx.ConnectError("refused")) == ("ConnectError", "connection_error", True)
    assert not classify(HttpError(500, "internal_error", "boom"))[2]
    assert not classify(InvalidRequest("bad field"))[2]
    assert classify(ConnectionResetError("raw driver error")) == (
        "ConnectionResetError", None, False)


def test_a_5xx_without_the_envelope_is_recorded_as_serves_own_answer() -> None:
    bare = http_error(500, "Internal Server Error")
    assert (bare.status, bare.code) == (500, SERVE_ERROR)
    assert classify(bare) == ("HTTP 500", SERVE_ERROR, True)
    assert classify(http_error(503, "Deployment 'api' is unavailable"))[1:] == (SERVE_ERROR, True)
    enveloped = http_error(500, '{"error": {"code": "internal_error", "message": "oops"}}')
    assert (enveloped.code, enveloped.message) == ("internal_error", "oops")
    assert not classify(enveloped)[2]
    assert classify(http_error(404, "Not Found")) == ("HTTP 404", None, False)
    assert classify(http_error(503, '{"error": {"code": "storage_error"}}'))[1:] == (
        "storage_error", True)
