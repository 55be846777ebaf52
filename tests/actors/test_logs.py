"""Structured logs: JSON and text lines, the log context across tasks and threads, and one
handler however often logging is configured."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import sys
from typing import Any

import pytest

from actors.logs import (
    LOG_FIELDS, JsonFormatter, TextFormatter, bind_log_context, configure_logging,
    current_log_context, log_context,
)

log = logging.getLogger("ymera.test")
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def json_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]


def test_a_json_line_carries_the_context_of_its_block_only(capsys) -> None:
    configure_logging("json")
    with log_context(task_id="t-1", attempt=2, agent_type="calculator"):
        log.info("attempt %s started", 2)
    log.info("after")
    inside, after = json_lines(capsys)
    assert TS.fullmatch(inside["ts"])
    assert inside == {"ts": inside["ts"], "level": "INFO", "logger": "ymera.test",
                      "message": "attempt 2 started", "task_id": "t-1", "attempt": 2,
                      "agent_type": "calculator"}
    assert set(after) == {"ts", "level", "logger", "message"}


def test_nested_contexts_merge_and_restore() -> None:
    with log_context(tenant="acme", task_id="t-1"):
        with log_context(task_id="t-2", attempt=1, replica=None):
            assert current_log_context() == {"tenant": "acme", "task_id": "t-2", "attempt": 1}
        assert current_log_context() == {"tenant": "acme", "task_id": "t-1"}
    assert current_log_context() == {}


def test_a_bound_field_lasts_until_the_enclosing_block_ends() -> None:
    with log_context(request_id="r-1"):
        bind_log_context(tenant="acme")
        assert current_log_context() == {"request_id": "r-1", "tenant": "acme"}
    assert current_log_context() == {}


async def test_the_context_follows_tasks_and_threads(capsys) -> None:
    configure_logging("json")

    async def in_task() -> None:
        await asyncio.sleep(0)
        log.info("in a task")

    def in_thread() -> None:
        log.info("in a thread")

    with log_context(request_id="req-7"):
        task = asyncio.create_task(in_task())
        await asyncio.to_thread(in_thread)
    await task
    lines = json_lines(capsys)
    assert [(line["message"], line.get("request_id")) for line in lines] == [
        ("in a thread", "req-7"), ("in a task", "req-7")]


def test_extra_fields_among_log_fields_are_written_and_others_are_not(capsys) -> None:
    configure_logging("json")
    with log_context(task_id="t-1"):
        log.warning("retrying", extra={"attempt": 3, "task_id": "t-9", "password": "x"})
    (line,) = json_lines(capsys)
    assert line["attempt"] == 3 and line["task_id"] == "t-9" and "password" not in line


def test_an_exception_is_written_as_one_string(capsys) -> None:
    configure_logging("json")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("it failed")
    (line,) = json_lines(capsys)
    assert line["level"] == "ERROR" and line["message"] == "it failed"
    assert "Traceback" in line["exc_info"] and "RuntimeError: boom" in line["exc_info"]


def test_odd_values_do_not_lose_the_line(capsys) -> None:
    configure_logging("json")
    circular: list[Any] = []
    circular.append(circular)
    with log_context(task_id=object(), replica=circular):
        log.info("odd")
    (line,) = json_lines(capsys)
    assert line["task_id"].startswith("<object") and line["replica"] == "[[...]]"


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_bad_message_arguments_do_not_lose_the_line(formatter: logging.Formatter) -> None:
    record = log.makeRecord(log.name, logging.INFO, __file__, 1, "%d items",
                            ("not a number",), None)
    assert "%d items ('not a number',)" in formatter.format(record)


def test_text_lines_name_the_fields_then_the_message(capsys) -> None:
    configure_logging("text")
    with log_context(task_id="t-1", attempt=2, agent_type="calculator"):
        log.info("attempt started")
    (line,) = capsys.readouterr().err.splitlines()
    ts, rest = line.split(" ", 1)
    assert TS.fullmatch(ts)
    assert rest == "INFO ymera.test task=t-1 attempt=2 agent=calculator attempt started"


def test_auto_writes_text_to_a_terminal(monkeypatch) -> None:
    controller, terminal = os.openpty()
    with os.fdopen(terminal, "w") as stderr:
        monkeypatch.setattr(sys, "stderr", stderr)
        configure_logging("auto")
        log.info("to a terminal")
        stderr.flush()
        written = os.read(controller, 4096).decode()
    os.close(controller)
    assert " INFO ymera.test to a terminal" in written and not written.startswith("{")


def test_auto_writes_json_elsewhere(monkeypatch) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    configure_logging("auto")
    log.info("to a file")
    assert json.loads(stderr.getvalue())["message"] == "to a file"


def test_configuring_twice_writes_each_record_once(capsys) -> None:
    configure_logging("json")
    configure_logging("json", "DEBUG")
    log.debug("once")
    assert [line["message"] for line in json_lines(capsys)] == ["once"]


def test_a_root_handler_on_the_process_stderr_is_taken_over() -> None:
    root = logging.getLogger()
    ray_like = logging.StreamHandler(sys.__stderr__)  # what a Ray LoggingConfig installs
    root.addHandler(ray_like)
    configure_logging("json")
    assert ray_like not in root.handlers
    assert len([h for h in root.handlers if h.filters]) == 1


def test_records_below_the_level_are_dropped(capsys) -> None:
    configure_logging("json", "warning")
    log.info("quiet")
    log.warning("loud")
    assert [line["message"] for line in json_lines(capsys)] == ["loud"]


def test_unknown_fields_formats_and_levels_are_refused() -> None:
    with pytest.raises(TypeError, match=r"unknown log context field\(s\) \['task'\]"):
        with log_context(task="t-1"):
            pass
    with pytest.raises(ValueError, match="log format"):
        configure_logging("xml")
    with pytest.raises(ValueError, match="log level"):
        configure_logging("json", "LOUD")
    assert LOG_FIELDS == ("task_id", "attempt", "agent_type", "tenant", "request_id", "replica",
                          "run_id")
