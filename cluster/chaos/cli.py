"""`ymera chaos`: a fault-injection run against a private platform, with its report.

    ymera chaos --duration 120 --seed 1            # every fault kind, text summary
    ymera chaos --duration 60 --kinds orchestrator_kill,postgres_restart --json

Progress goes to standard error, the report (text, or JSON with `--json`) to standard output.
It starts everything it uses (its own Ray head, PostgreSQL, Redis and fault proxies on free
ports) and stops it afterwards; the platform `ymera up` started, if any, is not touched. The
exit status is 1 when any acknowledged task or run was lost or duplicated, else 0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from cluster import cli_common
from cluster.chaos.faults import ALL_KINDS

AddCommand = Callable[[str, Callable[[argparse.Namespace], None], str], argparse.ArgumentParser]


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in ALL_KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(
            f"unknown fault kinds {unknown}; choose from {', '.join(ALL_KINDS)}")
    return kinds


def cmd_chaos(args: argparse.Namespace) -> None:
    from cluster.chaos.harness import ChaosOptions, run

    options = ChaosOptions(duration_s=args.duration, seed=args.seed, api=not args.no_api,
                           kinds=args.kinds, settle_s=args.settle)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        with _stdout_to_stderr():  # Ray prints worker deaths; stdout keeps the report alone
            report = run(options, progress)
    except ValueError as exc:
        print(f"ymera chaos: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    cli_common.print_result(args, report, summary(report))
    if not report["passed"]:
        raise SystemExit(1)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send what anything in this process writes to standard output (file descriptor 1) to
    standard error for the duration."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def summary(report: dict[str, Any]) -> str:
    ops = report["operations"]
    worst = report["worst_task_latency_during_faults_s"]
    lines = [
        f"chaos run: {report['duration_s']:g}s, seed {report['seed']}: "
        f"{'PASSED' if report['passed'] else 'FAILED'}",
        f"  acknowledged:  {ops['acknowledged_tasks']} tasks, {ops['acknowledged_runs']} runs "
        f"({ops['retried_submissions']} after retries; {ops['given_up_unacknowledged']} never "
        "acknowledged)",
        f"  outcomes:      tasks {ops['task_outcomes']}, runs {ops['run_outcomes']}",
        f"  lost:          {report['lost']}",
        f"  duplicated:    {report['duplicated']}",
        f"  malformed event logs: {report['malformed_event_logs']}",
        f"  faults:        {report['faults_injected']}",
        f"  not injected:  {report['fault_kinds_not_injected'] or 'none'}",
        "  worst recovery (s): " + ", ".join(
            f"{k} {v if v is not None else 'never'}"
            for k, v in sorted(report["worst_recovery_s_by_kind"].items())),
        f"  worst task latency during faults: {worst['seconds'] if worst else '-'}s",
        f"  client errors: {report['client_errors'] or 'none'} "
        f"({report['undocumented_client_errors']} not documented retryable)",
    ]
    return "\n".join(lines)


def add_chaos_command(add: AddCommand) -> None:
    chaos = add("chaos", cmd_chaos, "fault injection: load and faults on a private platform, "
                "then every acknowledged task accounted for")
    chaos.add_argument("--duration", type=float, default=120.0,
                       help="seconds of load and faults (default 120)")
    chaos.add_argument("--seed", type=int, default=1, help="the fault schedule's seed")
    chaos.add_argument("--kinds", type=_kinds, default=None,
                       help=f"comma-separated fault kinds (default: all): {', '.join(ALL_KINDS)}")
    chaos.add_argument("--no-api", action="store_true",
                       help="no HTTP API: Python clients only, no Serve faults")
    chaos.add_argument("--settle", type=float, default=180.0,
                       help="seconds to wait after the load for every task to finish")
