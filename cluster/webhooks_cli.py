"""`ymera webhooks ...` and `ymera inbox send`: a tenant's webhook subscriptions, their
deliveries, the task-callback secret, and messages left in an agent type's inbox.

    ymera webhooks add https://hooks.example.com/y --events task.succeeded,task.failed
    ymera webhooks list | show ID | enable ID | disable ID | delete ID
    ymera webhooks rotate ID --overlap 24h     a new secret; the old one signs for 24h more
    ymera webhooks deliveries --status failed  newest first (--webhook, --task, --event)
    ymera webhooks delivery ID                 one delivery with its attempts
    ymera webhooks redeliver ID
    ymera webhooks callback-secret [--rotate]  the secret that signs task callbacks
    ymera inbox send learning --body '{"payload": {...}}' [--subject S]

Every command takes `--json` and `--tenant` (default: default). A secret is printed only by
`add`, `rotate` and `callback-secret`: store it where the receiver verifies signatures.
Bad arguments (an unreadable --body or --overlap) are refused before anything is asked.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from typing import Any

from cluster import cli_common
from storage.errors import InvalidRequest

AddCommand = Callable[[str, Callable[[argparse.Namespace], None], str], argparse.ArgumentParser]
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration(text: str) -> float:
    """Seconds of "90", "90s", "30m", "24h" or "2d"."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text or "")
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 3600, 30m, 24h "
                                         "or 2d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def webhook_lines(hook: dict[str, Any]) -> list[str]:
    filters = [f"{name} {hook[name]}" for name in ("agent_type", "workflow") if hook.get(name)]
    lines = [f"{hook['id']}  {'enabled ' if hook.get('enabled') else 'disabled'}  {hook['url']}",
             f"  events: {', '.join(hook.get('events', []))}"
             + (f"  ({'; '.join(filters)})" if filters else "")]
    if hook.get("description"):
        lines.append(f"  {hook['description']}")
    if hook.get("previous_secret_expires_at"):
        lines.append(f"  previous secret signs until {hook['previous_secret_expires_at']}")
    return lines


def secret_lines(secret: str) -> list[str]:
    return [f"secret: {secret}",
            "  (shown this once: keep it where the receiver verifies signatures)"]


def delivery_line(delivery: dict[str, Any]) -> str:
    subject = delivery.get("task_id") or delivery.get("run_id") or "-"
    code = delivery.get("last_status_code")
    last = f"  last: {code or delivery.get('last_error') or '-'}" if delivery.get("attempts") \
        else ""
    return (f"{delivery['id']}  {delivery['status']:<9}  {delivery['event_kind']:<22}  "
            f"{subject}  attempts {delivery.get('attempts', 0)}{last}  -> {delivery['url']}")


def attempt_line(attempt: dict[str, Any]) -> str:
    outcome = attempt.get("status_code") or attempt.get("error") or "-"
    excerpt = (attempt.get("response_excerpt") or "")[:60].replace("\n", " ")
    return (f"  #{attempt['number']}  {attempt['at']}  {outcome}  "
            f"{attempt.get('duration_ms', 0):.0f} ms  {excerpt}").rstrip()


def _client(args: argparse.Namespace) -> Any:
    return cli_common.client_of(args)


def cmd_webhooks(args: argparse.Namespace) -> None:
    args.webhooks_handler(args)


def cmd_add(args: argparse.Namespace) -> None:
    hook = _client(args).webhook_create(
        args.url, args.events, agent_type=args.agent_type, workflow=args.workflow,
        description=args.description, enabled=not args.disabled, tenant=args.tenant)
    cli_common.print_result(args, hook, "\n".join(webhook_lines(hook)
                                                  + secret_lines(hook["secret"])))


def cmd_list(args: argparse.Namespace) -> None:
    hooks = _client(args).webhook_list(args.tenant)
    text = "\n".join(line for hook in hooks for line in webhook_lines(hook))
    cli_common.print_result(args, {"webhooks": hooks}, text or "no webhook subscriptions")


def cmd_show(args: argparse.Namespace) -> None:
    hook = _client(args).webhook_get(args.id, args.tenant)
    cli_common.print_result(args, hook, "\n".join(webhook_lines(hook)))


def _set_enabled(args: argparse.Namespace, enabled: bool) -> None:
    hook = _client(args).webhook_update(args.id, args.tenant, enabled=enabled)
    cli_common.print_result(args, hook, "\n".join(webhook_lines(hook)))


def cmd_enable(args: argparse.Namespace) -> None:
    _set_enabled(args, True)


def cmd_disable(args: argparse.Namespace) -> None:
    _set_enabled(args, False)


def cmd_delete(args: argparse.Namespace) -> None:
    deleted = _client(args).webhook_delete(args.id, args.tenant)
    cli_common.print_result(args, deleted, f"{args.id} deleted; its pending deliveries failed")


def cmd_rotate(args: argparse.Namespace) -> None:
    hook = _client(args).webhook_rotate_secret(args.id, args.overlap, args.tenant)
    cli_common.print_result(args, hook, "\n".join(webhook_lines(hook)
                                                  + secret_lines(hook["secret"])))


def cmd_deliveries(args: argparse.Namespace) -> None:
    page = _client(args).webhook_deliveries(
        subscription_id=args.webhook, status=args.status, task_id=args.task,
        event_kind=args.event, limit=args.limit, cursor=args.cursor, tenant=args.tenant)
    text = "\n".join(delivery_line(d) for d in page["deliveries"]) or "no deliveries"
    if page.get("next_cursor"):
        text += f"\nmore: --cursor {page['next_cursor']}"
    cli_common.print_result(args, page, text)


def cmd_delivery(args: argparse.Namespace) -> None:
    delivery = _client(args).webhook_delivery(args.id, args.tenant)
    lines = [delivery_line(delivery), *(attempt_line(a) for a in delivery["attempts"])]
    cli_common.print_result(args, delivery, "\n".join(lines))


def cmd_redeliver(args: argparse.Namespace) -> None:
    delivery = _client(args).webhook_redeliver(args.id, args.tenant)
    cli_common.print_result(args, delivery, delivery_line(delivery))


def cmd_callback_secret(args: argparse.Namespace) -> None:
    answer = _client(args).webhook_callback_secret(args.rotate, args.overlap, args.tenant)
    lines = [f"tenant {answer['tenant']}: task callbacks are signed with"]
    lines += secret_lines(answer["secret"]) if args.rotate else [answer["secret"]]
    cli_common.print_result(args, answer, "\n".join(lines))


def message_body(text: str) -> Any:
    """The JSON value of `--body`; `InvalidRequest` when it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"--body is not valid JSON: {exc}", {"field": "body"}) from None


def send_message(args: argparse.Namespace, client: Any) -> None:
    """`ymera inbox send AGENT_TYPE --body JSON`: leave a message, print it."""
    if args.body is None:
        raise InvalidRequest("give the message with --body JSON", {"field": "body"})
    message = client.send_message(args.send_to, message_body(args.body), subject=args.subject,
                                  tenant=args.tenant)
    cli_common.print_result(args, message.to_json(),
                            f"{message.id} sent to the {message.recipient} inbox "
                            f"of {message.tenant}")


def add_webhook_commands(add: AddCommand) -> None:
    """`ymera webhooks <command>`."""
    group = add("webhooks", cmd_webhooks,
                "webhook subscriptions, their deliveries and the task-callback secret")
    commands = group.add_subparsers(dest="webhooks_command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], None],
                help_text: str, takes_id: str | None = None) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(webhooks_handler=handler)
        if takes_id:
            sub.add_argument("id", help=takes_id)
        sub.add_argument("--tenant", default="default", help="whose (default: default)")
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                         help="print JSON for scripts")
        sub.add_argument("--address", default=argparse.SUPPRESS,
                         help="Ray cluster to use (default: YMERA_RAY_ADDRESS, else the local "
                              "head)")
        return sub

    added = command("add", cmd_add, "subscribe a URL to events (prints its secret once)")
    added.add_argument("url", help="the receiver, https:// (or http://)")
    added.add_argument("--events", required=True,
                       help="comma-separated kinds: task.succeeded, task.failed, task.dead, "
                            "task.cancelled, run.succeeded, run.failed, run.cancelled, "
                            "step.awaiting_approval; or patterns like task.* or *")
    added.add_argument("--agent-type", help="only events of tasks of this agent type")
    added.add_argument("--workflow", help="only events of runs of this workflow")
    added.add_argument("--description", help="what the receiver is, for people")
    added.add_argument("--disabled", action="store_true", help="create it disabled")
    command("list", cmd_list, "the tenant's subscriptions")
    command("show", cmd_show, "one subscription", takes_id="the subscription")
    command("enable", cmd_enable, "send this subscription's events again",
            takes_id="the subscription")
    command("disable", cmd_disable, "stop sending this subscription's events",
            takes_id="the subscription")
    command("delete", cmd_delete, "unsubscribe (pending deliveries fail)",
            takes_id="the subscription")
    rotate = command("rotate", cmd_rotate, "a new secret (printed once); the old one overlaps",
                     takes_id="the subscription")
    rotate.add_argument("--overlap", type=duration, default=86400.0,
                        help="how long the old secret still signs (default 24h; 0 ends it)")
    deliveries = command("deliveries", cmd_deliveries, "deliveries, newest first")
    deliveries.add_argument("--status", choices=["pending", "delivered", "failed"])
    deliveries.add_argument("--webhook", help="only this subscription's")
    deliveries.add_argument("--task", help="only this task's")
    deliveries.add_argument("--event", help="only this event kind")
    deliveries.add_argument("--limit", type=int, default=20)
    deliveries.add_argument("--cursor")
    command("delivery", cmd_delivery, "one delivery with its attempts", takes_id="the delivery")
    command("redeliver", cmd_redeliver, "send a delivered or failed delivery again",
            takes_id="the delivery")
    secret = command("callback-secret", cmd_callback_secret,
                     "the secret that signs the tenant's task callbacks")
    secret.add_argument("--rotate", action="store_true", help="make a new one")
    secret.add_argument("--overlap", type=duration, default=86400.0,
                        help="with --rotate: how long the old one still signs (default 24h)")
