"""`ymera`'s argument parser: every command, its handler, and `--address` for that command only."""

from __future__ import annotations

import importlib

import pytest

from cluster import bench, cli


def test_address_applies_to_the_command_it_was_given_to_only(monkeypatch) -> None:
    monkeypatch.delenv("YMERA_RAY_ADDRESS", raising=False)
    seen = []
    monkeypatch.setattr(cli, "cmd_status", lambda args: seen.append(cli._settings(args)))
    monkeypatch.setattr(cli, "_print", lambda *args: None)

    assert cli.main(["status", "--address", "10.1.2.3:6380"]) == 0
    assert cli.main(["status"]) == 0
    assert [s.ray_address for s in seen] == ["10.1.2.3:6380", None]


@pytest.mark.parametrize("command", ["up", "down", "status", "migrate", "tasks", "dead",
                                     "router"])
def test_every_command_takes_json_and_address_and_has_its_handler(command) -> None:
    args = cli.parser().parse_args([command, "--json", "--address", "h:1"])
    assert args.json and args.address == "h:1"
    assert args.handler is getattr(cli, f"cmd_{command}")


@pytest.mark.parametrize("suite", list(bench.SUITES))
def test_each_bench_suite_names_a_function_that_exists(suite) -> None:
    assert cli.parser().parse_args(["bench", suite]).suite == suite
    module, _, function = bench.SUITES[suite].partition(":")
    assert callable(getattr(importlib.import_module(module), function))
