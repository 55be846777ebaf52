"""The batch entrypoint, run as a Ray job: `python -m cluster.batch --input IN --output OUT`.

    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        $PWD/.venv/bin/python -m cluster.batch --input $PWD/tasks.jsonl --output $PWD/results.jsonl

(The job runs in a copy of the working directory, hence absolute paths; and with the PATH of the
shell that started Ray, hence the venv's Python. `ymera batch submit FILE` builds this command.)

It reads tasks (and workflow runs, `cluster.batch.workflows`) as JSON Lines (a local path, or
any URI smart_open reads), submits them through the orchestrator with at most `--max-in-flight`
lines in progress, prints a progress line every `--progress-interval` seconds, and writes one
result per input line, in input order (see `cluster.batch.runner` for the guarantees). A local
results file appears only once complete.

Every batch has an id (`--batch-id`, else one derived from the input's content, printed at the
start). Running the same batch id again resumes it: lines whose task exists are not submitted
twice, finished tasks are not run again. It exits 0 when every line is accounted for (whatever
the tasks' outcomes), 1 when the batch could not run (bad arguments, input unreadable, platform
unreachable), and 143 when stopped (`ray job stop`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from cluster.batch.input import (
    WorkflowFiles,
    default_batch_id,
    is_local,
    local_path,
    open_input,
    open_output,
    read_batch,
    scan_input,
)
from cluster.batch.runner import BatchOptions, BatchRun
from cluster.ray_env import prepare_ray_environment
from storage.errors import InvalidRequest, YmeraError

SUMMARY_PREFIX = "batch summary: "
STOPPED_EXIT = 143
DEFAULT_CHUNK = 500
MAX_IN_FLIGHT = 8000


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(
        prog="python -m cluster.batch",
        description="Run a file of YMERA tasks (JSON Lines) as one batch; meant for "
                    "`ray job submit`.")
    parse.add_argument("--input", required=True,
                       help="JSON Lines of tasks: a path or a URI (s3://, gs://, ...)")
    parse.add_argument("--output", required=True,
                       help="where the results go (JSON Lines, one per input line, in order); "
                            "a relative path is relative to the job's working directory")
    parse.add_argument("--batch-id", help="the batch's id (default: from the input's content); "
                       "the same id again resumes the batch")
    parse.add_argument("--tenant", default="default", help="the tenant the tasks belong to")
    parse.add_argument("--max-in-flight", type=int,
                       help="lines submitted but not yet written, at most (default: half the "
                            f"platform's per-tenant queue quota, at most {MAX_IN_FLIGHT})")
    parse.add_argument("--chunk-size", type=int,
                       help="lines per submission to the orchestrator (default: a quarter of "
                            f"--max-in-flight, at most {DEFAULT_CHUNK})")
    parse.add_argument("--progress-interval", type=float, default=10.0,
                       help="seconds between progress lines")
    parse.add_argument("--address", help="the Ray cluster (default: the job's own)")
    return parse


def default_in_flight(settings: Any) -> int:
    """Half of what one tenant may have waiting (and of the whole queue), so a batch never
    meets the quota on its own and leaves the tenant room for its other submissions."""
    return max(1, min(MAX_IN_FLIGHT, settings.queue_max // 2, settings.tenant_queue_max // 2))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cluster.client import Client
    from cluster.settings import Settings
    from storage.messages import NAME

    settings = Settings()
    scan = scan_input(args.input)
    batch_id = args.batch_id or default_batch_id(scan)
    if not NAME.match(batch_id):
        raise InvalidRequest("--batch-id must be 1 to 64 letters, digits, '_', '.', ':' or '-'")
    output = str(local_path(args.output).resolve()) if is_local(args.output) else args.output
    print(f"batch {batch_id}: {scan.lines} lines from {args.input}; results to {output}; "
          f"tenant {args.tenant}. Run again with --batch-id {batch_id} to resume it.",
          flush=True)
    in_flight = args.max_in_flight or default_in_flight(settings)
    chunk_size = args.chunk_size or max(1, min(DEFAULT_CHUNK, in_flight // 4))
    options = BatchOptions(batch_id, args.tenant, chunk_size=chunk_size, max_in_flight=in_flight,
                           progress_interval_s=args.progress_interval)
    client = Client.connect(args.address, settings.namespace)
    with open_input(args.input) as stream, open_output(args.output) as results:
        lines = read_batch(stream, batch_id=batch_id, tenant=args.tenant,
                           max_payload_bytes=settings.max_payload_bytes,
                           max_payload_depth=settings.max_payload_depth,
                           workflow_files=WorkflowFiles(args.input))
        runner = BatchRun(client, options, results, scan.lines,
                          report=lambda text: print(text, flush=True))
        return asyncio.run(runner.run(lines))


def _stopped(signum: int, frame: Any) -> None:
    raise SystemExit(STOPPED_EXIT)


def main(argv: list[str] | None = None) -> int:
    prepare_ray_environment()
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _stopped)
    try:
        summary = run(args)
    except YmeraError as exc:
        print(f"batch failed: {exc.message}", file=sys.stderr, flush=True)
        return 1
    except SystemExit as exc:
        if exc.code == STOPPED_EXIT:
            print("batch stopped; tasks already submitted keep running. Run it again with "
                  "the same --batch-id to resume.", flush=True)
        raise
    print(SUMMARY_PREFIX + json.dumps(summary), flush=True)
    return 0

