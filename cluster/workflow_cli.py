"""`ymera workflow ...`: run workflows and follow, approve, cancel and retry their runs.

    ymera workflow submit examples/workflows/report.yaml --input '{"rows": [...]}' --wait
    ymera workflow runs --status waiting
    ymera workflow get RUN
    ymera workflow approve RUN STEP --comment "looks right"
    ymera workflow events RUN --follow

Every command takes `--json` (the `to_json()` form; `events` prints one JSON object per line)
and `--tenant` (whose runs; `default` unless told), except `purge`, which is the operator's
retention command over every tenant. Errors are printed and exit 1, as for every `ymera` command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actors.errors import PlatformUnavailable
from cluster import cli_common
from storage.errors import InvalidRequest
from storage.workflow_records import UNMAPPED, RunDetail, RunEvent, StepStatus

FINISHED_EVENT_KINDS = frozenset({"run_succeeded", "run_failed", "run_cancelled"})
FOLLOW_INTERVAL_S = 0.5
DEFAULT_WAIT_S = 300.0
WAIT_SLICE_S = 2.0

AddCommand = Callable[[str, Callable[[argparse.Namespace], None], str], argparse.ArgumentParser]


def _client(args: argparse.Namespace) -> Any:
    return cli_common.client_of(args)


def _print(args: argparse.Namespace, value: Any, text: str) -> None:
    cli_common.print_result(args, value, text)


def _ascii_only() -> bool:
    encoding = (getattr(sys.stdout, "encoding", None) or "ascii").lower().replace("-", "")
    return encoding not in ("utf8", "utf16", "utf32")


def _show_run(args: argparse.Namespace, detail: RunDetail, headline: str | None = None) -> None:
    from cluster.workflow_view import render_run

    text = render_run(detail, ascii_only=_ascii_only())
    _print(args, detail.to_json(), f"{headline}\n{text}" if headline else text)


def _json_argument(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"{what} is not valid JSON: {exc}", {"field": what}) from None


def run_input(args: argparse.Namespace) -> Any:
    """The run's input: `--input` JSON, or the JSON of `--input-file` (`-` is standard
    input), else an empty object."""
    if args.input_file:
        if args.input_file == "-":
            return _json_argument(sys.stdin.read(), "--input-file")
        try:
            text = Path(args.input_file).expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"cannot read --input-file {args.input_file}: {exc}",
                                 {"field": "--input-file"}) from None
        return _json_argument(text, "--input-file")
    if args.input is not None:
        return _json_argument(args.input, "--input")
    return {}


def cmd_submit(args: argparse.Namespace) -> None:
    from cluster.client import read_workflow_file

    document = read_workflow_file(Path(args.file))
    value = run_input(args)
    client = _client(args)
    detail = client.submit_workflow(document, value, idempotency_key=args.idempotency_key,
                                    tenant=args.tenant, callback_url=args.callback_url)
    if args.wait is not None:
        detail = wait_for_outcome(client, detail, args.wait, args.tenant)
    if args.wait is None and not args.json:
        run = detail.run
        print(f"{run.id}  {run.status.value}  ({run.name} v{run.version}; follow it with "
              f"`ymera workflow get {run.id}` or `ymera workflow events {run.id} --follow`)")
        return
    _show_run(args, detail)


def wait_for_outcome(client: Any, detail: RunDetail, timeout_s: float,
                     tenant: str) -> RunDetail:
    """The run once it finished or needs a person's decision, or as it stands after
    `timeout_s`: waiting for an approval would only wait out the timeout."""
    deadline = time.monotonic() + timeout_s
    while not detail.run.status.is_finished and not needs_decision(detail):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        detail = client.wait_run(detail.run.id, min(left, WAIT_SLICE_S), tenant=tenant)
    return detail


def needs_decision(detail: RunDetail) -> bool:
    return any(step.status is StepStatus.AWAITING_APPROVAL for step in detail.steps)


def cmd_runs(args: argparse.Namespace) -> None:
    from cluster.workflow_view import render_run_line

    if args.limit < 1:
        raise InvalidRequest("--limit must be at least 1", {"field": "--limit"})
    page = _client(args).list_runs(tenant=args.tenant, status=args.status, limit=args.limit,
                                   cursor=args.cursor)
    text = "\n".join(render_run_line(run) for run in page.runs) or "no runs"
    if page.next_cursor:
        text += f"\nmore: --cursor {page.next_cursor}"
    _print(args, page.to_json(), text)


def cmd_get(args: argparse.Namespace) -> None:
    _show_run(args, _client(args).get_run(args.run_id, tenant=args.tenant))


def _decide(args: argparse.Namespace, decision: str) -> None:
    client = _client(args)
    decide = client.approve if decision == "approve" else client.reject
    detail = decide(args.run_id, args.step_id, args.comment, tenant=args.tenant,
                    map_index=args.item)
    verb = "approved" if decision == "approve" else "rejected"
    _show_run(args, detail, f"{verb} step {args.step_id} of run {args.run_id}")


def cmd_approve(args: argparse.Namespace) -> None:
    _decide(args, "approve")


def cmd_reject(args: argparse.Namespace) -> None:
    _decide(args, "reject")


def cmd_cancel(args: argparse.Namespace) -> None:
    detail = _client(args).cancel_run(args.run_id, tenant=args.tenant)
    _show_run(args, detail, f"cancelled run {args.run_id}")


def cmd_retry(args: argparse.Namespace) -> None:
    detail = _client(args).retry_from(args.run_id, args.from_step, tenant=args.tenant)
    _show_run(args, detail, f"retrying run {args.run_id} from step {args.from_step}")


def cmd_events(args: argparse.Namespace) -> None:
    """The run's events after `--after`; with `--follow`, new ones as they come until the run
    finishes (or Ctrl-C), waiting out an orchestrator that is restarting."""
    client = _client(args)
    after = args.after
    try:
        while True:
            try:
                events = client.run_events(args.run_id, after, tenant=args.tenant)
            except PlatformUnavailable:
                if not args.follow:
                    raise
                time.sleep(FOLLOW_INTERVAL_S)  # the orchestrator restarts: the run goes on
                continue
            for event in events:
                _print_event(args, event)
                after = event.id
            if not args.follow or (events and events[-1].kind in FINISHED_EVENT_KINDS):
                return
            if not events and after == args.after and _finished(client, args):
                return
            time.sleep(FOLLOW_INTERVAL_S)
    except KeyboardInterrupt:
        return


def _finished(client: Any, args: argparse.Namespace) -> bool:
    """Whether the run followed already finished (its events were all before `--after`)."""
    return bool(client.get_run(args.run_id, tenant=args.tenant).run.status.is_finished)


def _print_event(args: argparse.Namespace, event: RunEvent) -> None:
    from cluster.workflow_view import render_event

    if args.json:
        print(json.dumps(event.to_json(), default=str), flush=True)
    else:
        print(render_event(event), flush=True)


def cmd_purge(args: argparse.Namespace) -> None:
    if args.older_than is not None and args.older_than < 0:
        raise InvalidRequest("--older-than must be 0 or more seconds", {"field": "--older-than"})
    purged = _client(args).purge_runs(args.older_than)
    _print(args, {"purged": purged}, f"purged {purged} finished runs")


def cmd_workflow(args: argparse.Namespace) -> None:
    args.workflow_handler(args)


def add_workflow_commands(add: AddCommand) -> None:
    """`ymera workflow <command>`: one parser for the group, one sub-parser per command."""
    group = add("workflow", cmd_workflow, "run workflows; follow, approve, cancel and retry runs")
    commands = group.add_subparsers(dest="workflow_command", required=True,
                                    metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], None], help_text: str,
                tenant: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(workflow_handler=handler)
        # also accepted after the command; SUPPRESS keeps a value given before it
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                         help="print JSON for scripts")
        sub.add_argument("--address", default=argparse.SUPPRESS,
                         help="Ray cluster to use (default: YMERA_RAY_ADDRESS, else the local "
                              "head)")
        if tenant:
            sub.add_argument("--tenant", default=argparse.SUPPRESS,
                             help="whose runs (default: default)")
        return sub

    group.set_defaults(tenant="default")
    submit = command("submit", cmd_submit, "start a run of a workflow file (YAML or JSON)")
    submit.add_argument("file", help="the workflow document: .yaml, .yml or .json")
    given = submit.add_mutually_exclusive_group()
    given.add_argument("--input", help="the run's input, JSON (default: {})")
    given.add_argument("--input-file", metavar="FILE", help="the run's input from a JSON file "
                       "(- for standard input)")
    submit.add_argument("--wait", nargs="?", type=float, const=DEFAULT_WAIT_S, metavar="SECONDS",
                        help=f"wait until the run finishes or a step awaits approval (at "
                             f"most SECONDS, default {DEFAULT_WAIT_S:g}), then show it")
    submit.add_argument("--idempotency-key", help="the same key (per tenant) gives the same run")
    submit.add_argument("--callback-url", metavar="URL",
                        help="POST the run's outcome to URL when it finishes, signed with the "
                             "tenant's callback secret (docs/webhooks.md)")

    runs = command("runs", cmd_runs, "list runs, newest first")
    runs.add_argument("--status", choices=["pending", "running", "waiting", "succeeded",
                                           "failed", "cancelled"])
    runs.add_argument("--limit", type=int, default=20)
    runs.add_argument("--cursor")

    get = command("get", cmd_get, "a run's steps in dependency order, with their state")
    get.add_argument("run_id", metavar="RUN")

    for name, handler, verb in (("approve", cmd_approve, "approve"),
                                ("reject", cmd_reject, "reject")):
        decide = command(name, handler, f"{verb} a step awaiting approval")
        decide.add_argument("run_id", metavar="RUN")
        decide.add_argument("step_id", metavar="STEP")
        decide.add_argument("--comment", help="why (kept with the decision)")
        decide.add_argument("--item", type=int, default=UNMAPPED, metavar="INDEX",
                            help="the item of a mapped approval step")

    cancel = command("cancel", cmd_cancel, "cancel a run and its waiting and running steps")
    cancel.add_argument("run_id", metavar="RUN")

    retry = command("retry", cmd_retry, "run a failed or cancelled run again from a step, "
                    "keeping the steps that succeeded")
    retry.add_argument("run_id", metavar="RUN")
    retry.add_argument("--from", dest="from_step", required=True, metavar="STEP")

    events = command("events", cmd_events, "a run's events, oldest first")
    events.add_argument("run_id", metavar="RUN")
    events.add_argument("--after", type=int, default=0, metavar="ID",
                        help="only events after this id (resume a stream)")
    events.add_argument("--follow", action="store_true",
                        help="keep printing new events until the run finishes")

    purge = command("purge", cmd_purge, "operator: delete runs finished longer ago than the "
                    "retention setting (every tenant)", tenant=False)
    purge.add_argument("--older-than", type=float, metavar="SECONDS",
                       help="instead of the retention setting")
