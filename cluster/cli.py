"""`ymera`: start, stop, watch and use the platform from a terminal.

Every command prints readable text, or JSON with `--json` for scripts. Platform errors print
their message and exit with status 1; bad settings exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from cluster.backup_cli import add_backup_commands
from cluster.chaos.cli import add_chaos_command
from cluster.bench import add_arguments as add_bench_arguments
from cluster.knowledge_cli import add_knowledge_commands
from cluster.llm_cli import add_llm_commands
from cluster.plan_cli import add_plan_commands
from cluster.ray_env import prepare_ray_environment
from cluster.cli_common import client_of, print_result, settings_of
from cluster.webhooks_cli import add_webhook_commands, send_message
from cluster.workflow_cli import add_workflow_commands
from storage.errors import YmeraError
from storage.storable import readable


def _settings(args: argparse.Namespace) -> Any:
    return settings_of(args)


def _client(args: argparse.Namespace) -> Any:
    return client_of(args)


_print = print_result


def _task_json(task) -> dict[str, Any]:
    return task.to_json()


def _task_line(task) -> str:
    outcome = ""
    if task.error:
        outcome = f"  {task.error.code}: {task.error.message}"
    elif task.result is not None:
        outcome = "  " + json.dumps(readable(task.result), default=str)[:80]
    return (f"{task.id}  {task.status.value:<9}  {task.agent_type or '-':<15}  "
            f"attempts {task.attempts}/{task.max_attempts}{outcome}")


def cmd_up(args: argparse.Namespace) -> None:
    from cluster.platform import up

    started = up(_settings(args))
    _print(args, started.__dict__, "\n".join([
        f"YMERA is up (ready in {started.ready_s:g} s).",
        f"  Ray:        {started.ray_address} ({'started' if started.started_ray else 'joined'})",
        f"  Dashboard:  {started.dashboard_url or 'the Ray dashboard of your cluster'}",
        f"  Storage:    {started.database_url}",
        f"  Redis:      {started.redis}",
        f"  HTTP API:   {started.api_url + '/api/v1/docs' if started.api_url else 'off'}",
        f"  Console:    {started.api_url + '/console' if started.api_url else 'off'}",
        "Try: ymera submit 'what is 2^10 + 5' --wait",
    ]))


def cmd_down(args: argparse.Namespace) -> None:
    from cluster.platform import down

    report = down(_settings(args), args.drain_timeout)
    _print(args, report, "YMERA is down. " + json.dumps(report, default=str))


def cmd_status(args: argparse.Namespace) -> None:
    from cluster.health import STATS_WINDOW_S, examples_report, problems, report, status_view

    client = _client(args)
    status = client.status()
    stats = client.agent_stats(STATS_WINDOW_S)
    value = {**status_view(status, args.examples),
             "recent": {"window_s": STATS_WINDOW_S, "agent_types": stats},
             "problems": problems(status, stats)}
    text = report(status, stats)
    _print(args, value, f"{text}\n{examples_report(status)}" if args.examples else text)


def cmd_submit(args: argparse.Namespace) -> None:
    try:
        payload = json.loads(args.payload) if args.payload else {}
    except json.JSONDecodeError as exc:
        raise YmeraError(f"--payload is not valid JSON: {exc}") from None
    client = _client(args)
    options = {"agent_type": args.agent_type, "priority": args.priority,
               "timeout_s": args.timeout, "idempotency_key": args.idempotency_key,
               "callback_url": args.callback_url}
    if not args.wait:
        task_id = client.submit(args.description, payload, **options)
        _print(args, {"id": task_id}, task_id)
        return
    task = client.run(args.description, payload, wait_s=args.wait_timeout, **options)
    _print(args, _task_json(task), _task_line(task))


def cmd_get(args: argparse.Namespace) -> None:
    client = _client(args)
    task = client.get(args.task_id)
    attempts = client.attempts(args.task_id)
    value = {**_task_json(task), "attempt_history": [
        {"number": a.number, "replica": a.replica, "outcome": a.outcome.value,
         "started_at": a.started_at, "finished_at": a.finished_at,
         "duration_s": a.duration_s, "cpu_s": a.cpu_s,
         "error": a.error.to_json() if a.error else None} for a in attempts]}
    lines = [_task_line(task), f"  cost: cpu {task.cpu_s:.3f}s, wall {task.wall_s:.3f}s"]
    if task.llm_usage:
        used = task.llm_usage
        lines.append(f"  model: {used['calls']} call(s), {used['input_tokens']} tokens in, "
                     f"{used['output_tokens']} out, ${used['cost_usd']:.6f}")
    if task.route:
        route = task.route
        lines.append(f"  route: {route.get('method', 'requested')}, "
                     f"confidence {route.get('confidence', 1.0):.2f}; {route.get('reason', '')}")
    lines += [
        f"  attempt {a.number} on {a.replica}: {a.outcome.value}{_attempt_cost(a)}"
        + (f" ({a.error.code}: {a.error.message})" if a.error else "") for a in attempts]
    _print(args, value, "\n".join(lines))


def _attempt_cost(attempt) -> str:
    """`, wall 1.200s cpu 0.300s` as far as the attempt was measured; empty if not at all."""
    parts = [f"{name} {seconds:.3f}s" for name, seconds in
             (("wall", attempt.duration_s), ("cpu", attempt.cpu_s)) if seconds is not None]
    return ", " + " ".join(parts) if parts else ""


def cmd_tasks(args: argparse.Namespace) -> None:
    page = _client(args).list(status=args.status, agent_type=args.agent_type, limit=args.limit,
                          cursor=args.cursor)
    text = "\n".join(_task_line(t) for t in page.tasks) or "no tasks"
    if page.next_cursor:
        text += f"\nmore: --cursor {page.next_cursor}"
    _print(args, {"tasks": [_task_json(t) for t in page.tasks],
                  "next_cursor": page.next_cursor}, text)


def cmd_dead(args: argparse.Namespace) -> None:
    args.status, args.agent_type = "dead", None
    cmd_tasks(args)


def cmd_requeue(args: argparse.Namespace) -> None:
    task = _client(args).requeue(args.task_id)
    _print(args, _task_json(task), _task_line(task))


def cmd_cancel(args: argparse.Namespace) -> None:
    task = _client(args).cancel(args.task_id)
    _print(args, _task_json(task), _task_line(task))


def cmd_scale(args: argparse.Namespace) -> None:
    pool = _client(args).scale(args.agent_type, args.replicas, min_replicas=args.min,
                           max_replicas=args.max, reset=args.reset)
    bounds = (f"pinned at {pool['min_replicas']}" if pool["min_replicas"] == pool["max_replicas"]
              else f"autoscaling {pool['min_replicas']}..{pool['max_replicas']}")
    _print(args, pool, f"{pool['agent_type']}: {bounds} (set by {pool['bounds_set_by']}), "
                       f"{pool['desired']} desired, {pool['live']} live")


def cmd_inbox(args: argparse.Namespace) -> None:
    if args.agent_type == "send" and args.send_to:
        send_message(args, _client(args))
        return
    if args.send_to or args.body is not None or args.subject is not None:
        raise YmeraError("to send a message: ymera inbox send AGENT_TYPE --body JSON")
    page = _client(args).inbox(args.agent_type, include_acked=args.all, limit=args.limit,
                           cursor=args.cursor, tenant=args.tenant)
    messages = page["messages"]
    lines = [f"{m.id}  {'acked' if m.acked_at else 'new  '}  from {m.sender or '-'}  "
             f"{m.subject or ''}  {json.dumps(m.body, default=str)[:80]}" for m in messages]
    text = "\n".join(lines) or "no messages"
    if page["next_cursor"]:
        text += f"\nmore: --cursor {page['next_cursor']}"
    _print(args, {"messages": [m.to_json() for m in messages],
                  "next_cursor": page["next_cursor"]}, text)


def cmd_ack(args: argparse.Namespace) -> None:
    message = _client(args).ack(args.message_id, args.tenant)
    _print(args, message.to_json(), f"{message.id} acknowledged at {message.acked_at}")


def cmd_route(args: argparse.Namespace) -> None:
    from cluster import routing

    settings = _settings(args)
    state, modules = settings.state_path, list(settings.agent_modules)
    if settings.llm_settings() is not None:  # the platform registers `llm` then: route as it
        modules.append("actors.agents.llm:Llm")
    library = args.compare_semantic_router
    if args.calibrate:
        policy, path, baselines = routing.calibrate_file(state, modules, args.calibrate, library)
        fitted = {k: getattr(policy, k) for k in routing.FITTED_FIELDS}
        fitted_baselines = {name: {k: getattr(p, k) for k in routing.FITTED_FIELDS}
                            for name, p in baselines.items()}
        _print(args, {**fitted, "stored_in": str(path), "baselines": fitted_baselines},
               f"fitted {fitted}; stored in {path}\n"
               + "\n".join(f"baseline {name}: fitted {values}"
                           for name, values in fitted_baselines.items()))
    elif args.eval:
        report, baselines = routing.compare_file(state, modules, args.eval, library)
        text = [report.to_text(), "", "baselines, on the same encoder and texts:"]
        for name, baseline in baselines.items():
            text += [f"{name}:", baseline.summary()]
        _print(args, {**report.to_json(),
                      "baselines": {name: b.to_json() for name, b in baselines.items()}},
               "\n".join(text))
    elif args.description is not None:
        decision = routing.route_one(state, modules, args.description)
        verdict = (f"route to {decision['agent_type']}" if decision["routed"]
                   else "no confident route")
        lines = [f"{verdict} (confidence {decision['confidence']:.2f}, similarity "
                 f"{decision['similarity']:.2f}; {decision['reason']})"]
        lines += [f"  {name:<15} {score:.3f}" for name, score in decision["candidates"][:5]]
        lines += [f"  nearest: {n['text']!r} ({n['agent_type']}, {n['similarity']:.2f})"
                  for n in decision["explanation"]]
        _print(args, decision, "\n".join(lines))
    else:
        raise YmeraError("give a description, --eval FILE or --calibrate FILE")


def cmd_feedback(args: argparse.Namespace) -> None:
    outcome = _client(args).feedback(args.task_id, args.agent_type)
    text = (f"learned: tasks like {args.task_id} go to {outcome['agent_type']}"
            if outcome["added"] else f"the router already routes tasks like {args.task_id} "
            f"to {outcome['agent_type']}")
    if outcome["replaced"]:
        text += f" (replaced {outcome['replaced']} conflicting learned examples)"
    _print(args, outcome, text)


def cmd_router(args: argparse.Namespace) -> None:
    state = _client(args).router_state(args.tenant)
    if not state.get("enabled"):
        _print(args, state, "routing is off: tasks must name their agent type")
        return
    lines = [f"{state['waiting']} tasks waiting for a route; fallback type: "
             f"{state['fallback_agent_type'] or 'none'}",
             f"examples (declared, shared / learned, feedback of tenant {state['tenant']}):"]
    for name, counts in state["examples"].items():
        lines.append(f"  {name:<15} {counts.get('declared', 0):>4} {counts.get('learned', 0):>5} "
                     f"{counts.get('feedback', 0):>5}")
    _print(args, state, "\n".join(lines))


def cmd_admin(args: argparse.Namespace) -> None:
    from cluster import admin

    url = _settings(args).resolved_database_url
    if args.action == "create-user":
        password = _read_password(args.password_stdin)
        user = admin.create_user(url, args.tenant, args.username, args.role, password)
        _print(args, user, f"created {user['role']} {user['username']} in tenant "
               f"{user['tenant']} ({user['id']})")
    else:
        key = admin.create_key(url, args.tenant, args.name, args.role, args.expires_in_days)
        _print(args, key, f"created {key['role']} key {key['name']} ({key['id']}) in tenant "
               f"{key['tenant']}. It is shown only now:\n{key['key']}")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    import getpass

    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise YmeraError("the two passwords differ")
    return first


def cmd_migrate(args: argparse.Namespace) -> None:
    from storage.database import migrate

    settings = _settings(args)
    migrate(settings.resolved_database_url)
    _print(args, {"migrated": True}, "storage is at the latest schema")


def cmd_batch(args: argparse.Namespace) -> None:
    from cluster.batch import job as batch_job

    settings = _settings(args)
    if args.action == "status":
        status = _client(args).batch_status(args.target, args.tenant).to_json()
        status["jobs"] = batch_job.batch_jobs(settings, args.target, args.job_address)
        counts = ", ".join(f"{k} {v}" for k, v in status["counts"].items() if v)
        lines = [f"batch {status['batch_id']} ({status['tenant']}): {status['finished']} of "
                 f"{status['total']} tasks finished; {counts}"]
        lines += [f"  Ray job {job['submission_id']}: {job['status']}" for job in status["jobs"]]
        _print(args, status, "\n".join(lines))
        return
    entrypoint_args = []
    for flag, value in (("--max-in-flight", args.max_in_flight),
                        ("--progress-interval", args.progress_interval)):
        if value is not None:
            entrypoint_args += [flag, str(value)]
    batch_id, submission_id, code = batch_job.submit(
        settings, args.target, output=args.output, batch_id=args.batch_id, tenant=args.tenant,
        address=args.job_address, python=args.python, working_dir=args.working_dir,
        wait=not args.no_wait, entrypoint_args=tuple(entrypoint_args), logs_to_stderr=args.json)
    if args.json:
        print(json.dumps({"batch_id": batch_id, "submission_id": submission_id,
                          "exit_status": code}))
    if code != 0:
        raise YmeraError(f"ray job submit exited with status {code}", {"exit_status": code})


def cmd_bench(args: argparse.Namespace) -> None:
    from cluster.bench import run

    run(args)


AddCommand = Callable[[str, Callable[[argparse.Namespace], None], str], argparse.ArgumentParser]


def parser() -> argparse.ArgumentParser:
    """`ymera`'s arguments: every command takes `--json` and `--address`, and carries its
    function as `handler`; each group of commands is added by its own function below."""
    root = argparse.ArgumentParser(prog="ymera", description="YMERA multi-agent platform on Ray")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    common.add_argument("--address", help="Ray cluster to use (default: YMERA_RAY_ADDRESS, "
                        "else the local head)")
    commands = root.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], None],
            help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text)
        sub.set_defaults(handler=handler)
        return sub

    for add_group in (_platform_commands, _task_commands, _pool_commands, _router_commands,
                      _admin_commands, _batch_commands, add_workflow_commands,
                      add_plan_commands, add_llm_commands, add_knowledge_commands,
                      add_webhook_commands, add_backup_commands, add_chaos_command):
        add_group(add)
    add_bench_arguments(add("bench", cmd_bench, "benchmarks"))
    return root


def _platform_commands(add: AddCommand) -> None:
    add("up", cmd_up, "start Ray (or join --address), storage and the orchestrator")
    down = add("down", cmd_down, "drain, then stop what `up` started")
    down.add_argument("--drain-timeout", type=float, default=60.0)
    status = add("status", cmd_status, "health: pools, queues, recent failure rates, dead letters")
    status.add_argument("--examples", action="store_true",
                        help="also list every agent type's declared examples")
    add("migrate", cmd_migrate, "bring storage to the latest schema")


def _task_commands(add: AddCommand) -> None:
    submit = add("submit", cmd_submit, "submit a task")
    submit.add_argument("description")
    submit.add_argument("--payload", help="JSON object")
    submit.add_argument("--agent-type")
    submit.add_argument("--priority", type=int, default=0)
    submit.add_argument("--timeout", type=float, help="seconds per attempt")
    submit.add_argument("--idempotency-key")
    submit.add_argument("--wait", action="store_true", help="wait for the outcome")
    submit.add_argument("--wait-timeout", type=float, default=300.0)
    submit.add_argument("--callback-url", help="called, signed, when the task finishes")
    get = add("get", cmd_get, "one task with its attempt history")
    get.add_argument("task_id")
    tasks = add("tasks", cmd_tasks, "list tasks, newest first")
    tasks.add_argument("--status")
    tasks.add_argument("--agent-type")
    tasks.add_argument("--limit", type=int, default=20)
    tasks.add_argument("--cursor")
    dead = add("dead", cmd_dead, "list dead-lettered tasks")
    dead.add_argument("--limit", type=int, default=20)
    dead.add_argument("--cursor")
    requeue = add("requeue", cmd_requeue, "requeue a dead task")
    requeue.add_argument("task_id")
    cancel = add("cancel", cmd_cancel, "cancel a queued or running task")
    cancel.add_argument("task_id")


def _pool_commands(add: AddCommand) -> None:
    scale = add("scale", cmd_scale, "pin a pool's replica count, or set its autoscaling bounds "
                "(kept across restarts until --reset)")
    scale.add_argument("agent_type")
    scale.add_argument("replicas", type=int, nargs="?",
                       help="pin the pool at this many replicas (surplus ones drain first)")
    scale.add_argument("--min", type=int, help="autoscale: fewest replicas")
    scale.add_argument("--max", type=int, help="autoscale: most replicas")
    scale.add_argument("--reset", action="store_true",
                       help="give the pool its configured bounds again")
    inbox = add("inbox", cmd_inbox, "messages in an agent type's inbox; `inbox send "
                "AGENT_TYPE --body JSON` leaves one")
    inbox.add_argument("agent_type", metavar="[send] AGENT_TYPE")
    inbox.add_argument("send_to", nargs="?", help=argparse.SUPPRESS)
    inbox.add_argument("--body", help="send: the message, a JSON value")
    inbox.add_argument("--subject", help="send: a subject line")
    inbox.add_argument("--all", action="store_true", help="include acknowledged messages")
    inbox.add_argument("--limit", type=int, default=20)
    inbox.add_argument("--cursor")
    inbox.add_argument("--tenant", default="default", help="whose inbox")
    ack = add("ack", cmd_ack, "acknowledge an inbox message")
    ack.add_argument("message_id")
    ack.add_argument("--tenant", default="default", help="the message's tenant")


def _router_commands(add: AddCommand) -> None:
    route = add("route", cmd_route, "which agent would take a task (in this process)")
    route.add_argument("description", nargs="?")
    route.add_argument("--eval", metavar="FILE", help="evaluate on labelled JSON Lines")
    route.add_argument("--calibrate", metavar="FILE",
                       help="fit the confidence thresholds on labelled JSON Lines and store them")
    route.add_argument("--compare-semantic-router", action="store_true",
                       help="with --eval or --calibrate, also the semantic-router library "
                            "(pip install 'ymera[compare-router]')")
    feedback = add("feedback", cmd_feedback,
                   "teach the router which agent type should have taken a task")
    feedback.add_argument("task_id")
    feedback.add_argument("agent_type")
    router_state = add("router", cmd_router, "what the running router has learned for a tenant")
    router_state.add_argument("--tenant", default="default",
                              help="whose learned and feedback examples to count")


def _admin_commands(add: AddCommand) -> None:
    admin = add("admin", cmd_admin, "bootstrap API users and keys (straight on storage)")
    admin.add_argument("action", choices=["create-user", "create-key"])
    admin.add_argument("--tenant", default="default")
    admin.add_argument("--role", default="admin",
                       choices=["platform_admin", "admin", "operator", "submitter", "viewer"],
                       help="platform_admin: also scale the shared pools and read platform "
                            "details (granted only here, never over HTTP)")
    admin.add_argument("--username", help="create-user: the login name")
    admin.add_argument("--password-stdin", action="store_true",
                       help="create-user: read the password from standard input")
    admin.add_argument("--name", default="cli", help="create-key: a label for the key")
    admin.add_argument("--expires-in-days", type=float, help="create-key: expiry")


def _batch_commands(add: AddCommand) -> None:
    batch = add("batch", cmd_batch, "run a file of tasks as a Ray job; how a batch stands")
    batch.add_argument("action", choices=["submit", "status"])
    batch.add_argument("target", metavar="FILE|BATCH_ID",
                       help="submit: JSON Lines of tasks or workflow runs (path or URI); "
                       "status: a batch id")
    batch.add_argument("--batch-id", help="submit: the batch's id (default: from the file's "
                       "content); the same id again resumes the batch")
    batch.add_argument("--output", help="submit: results (default: FILE.results.jsonl)")
    batch.add_argument("--tenant", default="default")
    batch.add_argument("--max-in-flight", type=int, help="submit: lines in progress, at most")
    batch.add_argument("--progress-interval", type=float,
                       help="submit: seconds between progress lines in the job log")
    batch.add_argument("--job-address", help="the Ray job server (default: the local head's "
                       "dashboard, or RAY_API_SERVER_ADDRESS)")
    batch.add_argument("--python", help="submit: the Python the job runs (default: this one "
                       "for a local head, else `python`)")
    batch.add_argument("--working-dir", help="submit: a directory to upload with the job")
    batch.add_argument("--no-wait", action="store_true",
                       help="submit: return once the job is submitted, without following it")


def main(argv: list[str] | None = None) -> int:
    prepare_ray_environment()
    args = parser().parse_args(argv)
    try:
        args.handler(args)
    except ValidationError as exc:
        print(f"ymera: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    except YmeraError as exc:
        if args.json:
            print(json.dumps({"error": {"code": exc.code, "message": exc.message,
                                        "details": exc.details}}, default=str))
        else:
            print(f"ymera: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
