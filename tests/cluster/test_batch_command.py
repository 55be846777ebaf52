"""`ymera batch submit` builds the `ray job submit` command a user would type: the batch named
in the submission id and metadata, absolute paths, the job server of the local head."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cluster.batch.input import default_batch_id, scan_input
from cluster.batch.job import METADATA_BATCH_ID, submit_command
from cluster.cli import parser
from cluster.settings import Settings


def entrypoint(command: list[str]) -> list[str]:
    return command[command.index("--") + 1:]


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_the_command_names_the_batch_and_uses_absolute_paths(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tasks.jsonl").write_text('{"description": "a"}\n')
    settings = Settings(ray_address=None, dashboard_port=8299, namespace="team-a")
    batch_id, submission_id, command = submit_command(settings, "tasks.jsonl", tenant="acme")

    assert batch_id == default_batch_id(scan_input(str(tmp_path / "tasks.jsonl")))
    assert command[1:3] == ["job", "submit"]
    assert option(command, "--address") == "http://127.0.0.1:8299"
    assert submission_id == option(command, "--submission-id")
    assert submission_id.startswith(f"ymera-batch-{batch_id}-")
    assert json.loads(option(command, "--metadata-json"))[METADATA_BATCH_ID] == batch_id
    assert json.loads(option(command, "--runtime-env-json")) == {
        "env_vars": {"YMERA_NAMESPACE": "team-a"}}
    assert "--no-wait" not in command and "--working-dir" not in command
    assert entrypoint(command) == [
        sys.executable, "-m", "cluster.batch", "--input", str(tmp_path / "tasks.jsonl"),
        "--output", str(tmp_path / "tasks.results.jsonl"), "--batch-id", batch_id,
        "--tenant", "acme"]


def test_a_remote_cluster_gets_plain_python_and_ray_s_own_address_lookup(tmp_path: Path):
    source = tmp_path / "tasks.jsonl"
    source.write_text('{"description": "a"}\n')
    settings = Settings(ray_address="10.0.0.5:6380")
    _, _, command = submit_command(settings, str(source), output="s3://bucket/out.jsonl",
                                   batch_id="nightly", wait=False, working_dir=".",
                                   entrypoint_args=("--max-in-flight", "100"))
    assert "--address" not in command[:command.index("--")]
    assert "--no-wait" in command and option(command, "--working-dir") == "."
    assert entrypoint(command)[0] == "python"
    assert option(entrypoint(command), "--output") == "s3://bucket/out.jsonl"
    assert entrypoint(command)[-2:] == ["--max-in-flight", "100"]


def test_the_cli_has_batch_submit_and_status_and_bench_batch():
    args = parser().parse_args(["batch", "submit", "tasks.jsonl", "--batch-id", "b1",
                                "--no-wait"])
    assert (args.action, args.target, args.batch_id, args.no_wait) == (
        "submit", "tasks.jsonl", "b1", True)
    args = parser().parse_args(["batch", "status", "b1", "--tenant", "acme", "--json"])
    assert (args.action, args.target, args.tenant, args.json) == ("status", "b1", "acme", True)
    assert parser().parse_args(["bench", "batch"]).suite == "batch"
