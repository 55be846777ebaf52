"""`ymera batch submit` and `ymera batch status`: the batch entrypoint as a Ray job, and how a
batch stands.

`submit` runs exactly the `ray job submit` command a user could type (it prints it first), with
the batch named in the job's submission id and metadata so the Ray dashboard's Jobs view finds
it. Token auth comes from the environment (`RAY_AUTH_MODE=token`, set by `cluster.ray_env`;
Ray reads the token from `~/.ray/auth_token`).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from typing import Any

from cluster.batch.input import default_batch_id, is_local, local_path, scan_input
from cluster.local_ray import _ray_command
from cluster.settings import Settings

METADATA_BATCH_ID = "ymera_batch_id"
RESULTS_SUFFIX = ".results.jsonl"


def job_address(settings: Settings, address: str | None) -> str | None:
    """The job server to submit to: the one given, the local head's dashboard when `ymera up`
    started it, else None (the Ray CLI then reads RAY_API_SERVER_ADDRESS / RAY_ADDRESS)."""
    if address:
        return address
    if settings.ray_address is None:
        return f"http://127.0.0.1:{settings.dashboard_port}"
    return None


def default_output(input_uri: str) -> str:
    """Beside the input: `tasks.jsonl` gives `tasks.results.jsonl`."""
    base = input_uri[:-len(".jsonl")] if input_uri.endswith(".jsonl") else input_uri
    return base + RESULTS_SUFFIX


def _absolute(uri: str) -> str:
    """A local path made absolute: the job runs in another working directory."""
    return str(local_path(uri).resolve()) if is_local(uri) else uri


def submit_command(settings: Settings, input_uri: str, *, output: str | None = None,
                   batch_id: str | None = None, tenant: str = "default",
                   address: str | None = None, python: str | None = None,
                   working_dir: str | None = None, wait: bool = True,
                   entrypoint_args: tuple[str, ...] = ()) -> tuple[str, str, list[str]]:
    """(batch id, submission id, the `ray job submit` command) for one batch."""
    input_uri = _absolute(input_uri)
    batch_id = batch_id or default_batch_id(scan_input(input_uri))
    output = _absolute(output or default_output(input_uri))
    submission_id = f"ymera-batch-{batch_id}-{int(time.time())}"
    command = [*_ray_command(), "job", "submit"]
    server = job_address(settings, address)
    if server:
        command += ["--address", server]
    command += ["--submission-id", submission_id,
                "--metadata-json", json.dumps({METADATA_BATCH_ID: batch_id,
                                               "ymera_tenant": tenant, "ymera_input": input_uri}),
                "--runtime-env-json", json.dumps({"env_vars": {
                    "YMERA_NAMESPACE": settings.namespace}})]
    if working_dir:
        command += ["--working-dir", working_dir]
    if not wait:
        command.append("--no-wait")
    python = python or (sys.executable if settings.ray_address is None else "python")
    command += ["--", python, "-m", "cluster.batch", "--input", input_uri, "--output", output,
                "--batch-id", batch_id, "--tenant", tenant, *entrypoint_args]
    return batch_id, submission_id, command


def submit(settings: Settings, input_uri: str, *, logs_to_stderr: bool = False,
           **options: Any) -> tuple[str, str, int]:
    """Run `ray job submit` for the batch, its output straight to this terminal (to standard
    error with `logs_to_stderr`, keeping standard output for JSON). Returns (batch id,
    submission id, the command's exit status)."""
    batch_id, submission_id, command = submit_command(settings, input_uri, **options)
    print(f"batch {batch_id} as Ray job {submission_id}:\n  {shlex.join(command)}",
          file=sys.stderr, flush=True)
    stdout = sys.stderr if logs_to_stderr else None
    return batch_id, submission_id, subprocess.run(command, stdout=stdout).returncode


def batch_jobs(settings: Settings, batch_id: str, address: str | None = None
               ) -> list[dict[str, Any]]:
    """The Ray jobs that ran batch `batch_id` (from their metadata), oldest first; [] when the
    job server cannot be asked."""
    server = job_address(settings, address)
    try:
        from ray.job_submission import JobSubmissionClient

        jobs = JobSubmissionClient(server).list_jobs()
    except Exception:  # the job server is optional for counts; say nothing rather than fail
        return []
    found = [job for job in jobs if (job.metadata or {}).get(METADATA_BATCH_ID) == batch_id]
    return [{"submission_id": job.submission_id, "status": str(job.status.value),
             "start_time": job.start_time, "end_time": job.end_time}
            for job in sorted(found, key=lambda job: job.start_time or 0)]
