"""The local Ray head of `ymera up`/`ymera down`: found through its state directory, and stopped
without touching any other Ray cluster on the machine.

Those that start Ray heads of their own have the marker `restarts_ray`.
"""

from __future__ import annotations

import pytest

from actors.errors import PlatformUnavailable
from cluster.local_ray import (
    MARKER,
    default_ray_address,
    head_is_running,
    local_head_address,
    start_head,
    stop_head,
)
from tests.cluster.test_cli import free_port


@pytest.mark.restarts_ray
def test_stopping_one_head_leaves_another_cluster_running(tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir(), theirs.mkdir()
    our_port, their_port = free_port(), free_port()
    start_head(theirs, their_port, free_port(), num_cpus=1)
    try:
        address = start_head(ours, our_port, free_port(), num_cpus=1)
        assert local_head_address(ours, free_port()) == address == f"127.0.0.1:{our_port}"

        assert stop_head(ours) is True
        assert not head_is_running(our_port)
        assert _naming(address) == []  # nothing of ours is left: the Ray Client server too
        assert head_is_running(their_port)
        assert _naming(f"127.0.0.1:{their_port}")  # theirs still runs, all of it
        assert not (ours / MARKER).exists() and stop_head(ours) is False
    finally:
        stop_head(theirs)
    assert not head_is_running(their_port)


def _naming(address: str) -> list[str]:
    """The command lines of this machine's processes that name the head at `address`."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        line = " ".join(process.info["cmdline"] or ())
        if f"={address}" in line and "pytest" not in line:
            found.append(line[:160])
    return found


def test_no_running_head_is_reported_at_once(tmp_path):
    (tmp_path / MARKER).write_text(f"127.0.0.1:{free_port()}")
    with pytest.raises(PlatformUnavailable, match="no platform is running.*ymera up"):
        local_head_address(tmp_path, free_port())


def test_inside_a_ray_job_a_driver_joins_the_job_s_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.7:6379")
    assert default_ray_address(tmp_path, free_port()) == "auto"
    monkeypatch.delenv("RAY_ADDRESS")
    with pytest.raises(PlatformUnavailable, match="no platform is running"):
        default_ray_address(tmp_path, free_port())


def _ray_start_answers(monkeypatch, answers: list[tuple[int, str]]) -> tuple[list, list]:
    """`ray start` answering each call with the next (exit code, stderr); what it was asked,
    and which heads were cleaned up after."""
    import subprocess

    import cluster.local_ray as local_ray

    calls: list = []
    cleaned: list = []

    def run(command, **kwargs):
        calls.append(command)
        code, stderr = answers[len(calls) - 1]
        return subprocess.CompletedProcess(command, code, "", stderr)

    monkeypatch.setattr(local_ray, "head_is_running", lambda port: False)
    monkeypatch.setattr(local_ray, "_ensure_auth_token", lambda: None)
    monkeypatch.setattr(local_ray.subprocess, "run", run)
    monkeypatch.setattr(local_ray, "_head_processes", lambda address: [address])
    monkeypatch.setattr(local_ray, "_stop_processes", lambda processes: cleaned.extend(processes))
    return calls, cleaned


def test_a_head_that_timed_out_during_startup_is_cleaned_up_and_tried_once_more(
        tmp_path, monkeypatch):
    timed_out = "Exception: The current node timed out during startup. ..."
    calls, cleaned = _ray_start_answers(monkeypatch, [(1, timed_out), (0, "")])
    assert start_head(tmp_path, 40001, 40002, num_cpus=1) == "127.0.0.1:40001"
    assert len(calls) == 2 and cleaned == ["127.0.0.1:40001"]
    assert (tmp_path / MARKER).read_text() == "127.0.0.1:40001"


def test_a_head_that_fails_otherwise_is_cleaned_up_and_not_retried(tmp_path, monkeypatch):
    calls, cleaned = _ray_start_answers(monkeypatch, [(1, "port 40001 is already in use")])
    with pytest.raises(RuntimeError, match="already in use"):
        start_head(tmp_path, 40001, 40002, num_cpus=1)
    assert len(calls) == 1 and cleaned == ["127.0.0.1:40001"]
    assert not (tmp_path / MARKER).exists()


def test_a_failed_start_says_what_the_new_session_logged(tmp_path, monkeypatch):
    ray_tmp = tmp_path / "tmp"
    logs = ray_tmp / "ray" / "session_2026-12-05_10-00-00_000000_1" / "logs"
    logs.mkdir(parents=True)
    (logs / "raylet.out").write_text("Failed to bind metrics agent port 8080: in use\n")
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    calls, cleaned = _ray_start_answers(monkeypatch, [(1, "Exception: something else")])
    with pytest.raises(RuntimeError, match="(?s)something else.*raylet.out.*port 8080: in use"):
        start_head(tmp_path, 40001, 40002, num_cpus=1)


def test_an_older_session_is_not_quoted_as_the_failed_start(tmp_path, monkeypatch):
    import os

    from cluster.local_ray import startup_logs

    logs = tmp_path / "ray" / "session_2020-01-01_00-00-00_000000_1" / "logs"
    logs.mkdir(parents=True)
    (logs / "raylet.out").write_text("an old cluster's complaint\n")
    os.utime(logs.parent, (1_000_000, 1_000_000))
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    assert startup_logs(since=2_000_000) == ""


def test_a_metrics_port_in_use_is_refused_at_once_naming_the_setting(tmp_path, monkeypatch):
    import os
    import socket

    from storage.errors import InvalidRequest

    calls, cleaned = _ray_start_answers(monkeypatch, [])
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with pytest.raises(InvalidRequest, match=rf"port {taken} \(YMERA_RAY_METRICS_PORT\) "
                           rf"is in use by \S+ \(pid {os.getpid()}\).*Set YMERA_RAY_METRICS_PORT"):
            start_head(tmp_path, 40001, 40002, num_cpus=1, metrics_port=taken)
    assert calls == [] and cleaned == []  # nothing was started, nothing needed stopping
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize("recorded, kept", [("127.0.0.1:40001", False),
                                            ("127.0.0.1:50000", True)])
def test_down_forgets_its_head_where_ray_records_the_current_cluster(
        tmp_path, monkeypatch, recorded, kept):
    """`ray start` records the machine's current cluster, which Ray's job supervisor resolves
    for a job's driver; a record left naming a stopped head sends later jobs nowhere. Another
    cluster's record is left alone."""
    import cluster.local_ray as local_ray

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "tmp"))
    record = tmp_path / "tmp" / "ray" / "ray_current_cluster"
    record.parent.mkdir(parents=True)
    record.write_text(recorded)
    (tmp_path / MARKER).write_text("127.0.0.1:40001")
    stopped: list = []
    monkeypatch.setattr(local_ray, "_head_processes", lambda address: [address])
    monkeypatch.setattr(local_ray, "_stop_processes", lambda processes: stopped.extend(processes))
    assert local_ray.stop_head(tmp_path)
    assert stopped == ["127.0.0.1:40001"]
    assert record.exists() == kept
