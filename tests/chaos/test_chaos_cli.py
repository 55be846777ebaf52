"""`ymera chaos` refuses a run it cannot do before it starts anything: an unknown fault kind, a
duration with no room for faults, Serve faults without the HTTP API."""

from __future__ import annotations

import pytest

from cluster.cli import main


@pytest.mark.parametrize(("argv", "says"), [
    (["--kinds", "disk_full"], "unknown fault kinds ['disk_full']"),
    (["--duration", "5", "--no-api"], "a run of 5s leaves no time for faults"),
    (["--no-api", "--kinds", "serve_proxy_kill"], "need the HTTP API"),
])
def test_impossible_runs_are_refused_with_the_reason(argv: list[str], says: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["chaos", *argv])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert says in captured.err
    assert captured.out == ""


def test_kinds_are_parsed_from_a_comma_separated_list() -> None:
    from cluster.chaos.cli import _kinds

    assert _kinds("worker_node_removal, agent_replica_kill,") == (
        "worker_node_removal", "agent_replica_kill")
