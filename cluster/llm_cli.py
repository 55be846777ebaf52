"""`ymera llm ...`: the model gateway's deployments, a tenant's token usage, and budgets.

    ymera llm status                         model groups, deployments, circuit breakers
    ymera llm usage --tenant acme            acme's budget this period, tokens and cost
    ymera llm budget acme --tokens 2000000   acme may use 2M tokens a month (--period day|total)
    ymera llm budget acme --unlimited        no limit (still counted)

Every command takes `--json`. With no model configured, `status` prints how to add one and the
others fail with that hint (exit 1).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from cluster import cli_common

AddCommand = Callable[[str, Callable[[argparse.Namespace], None], str], argparse.ArgumentParser]


def _budget_line(budget: dict[str, Any]) -> str:
    limit = budget.get("limit_tokens")
    used = budget.get("used_tokens", 0)
    reserved = budget.get("reserved_tokens", 0)
    period = budget.get("period", "month")
    if limit is None:
        return f"budget: unlimited ({used:,} tokens used this {period}, {reserved:,} reserved)"
    return (f"budget: {used:,} of {limit:,} tokens used this {period} ({reserved:,} reserved, "
            f"{budget.get('remaining_tokens', 0):,} left)")


def render_status(status: dict[str, Any]) -> str:
    if not status.get("configured"):
        return f"No model configured.\n{status.get('hint', '')}"
    lines = [f"default group: {status.get('default_group')}"]
    for deployment in status.get("deployments", []):
        lines.append(f"  {deployment.get('group')}/{deployment.get('name')}  "
                     f"{deployment.get('provider')} {deployment.get('model')}  "
                     f"breaker {deployment.get('breaker', '?')}")
    return "\n".join(lines)


def render_usage(usage: dict[str, Any]) -> str:
    totals = usage.get("usage", {})
    return "\n".join([
        f"tenant {usage.get('tenant')}",
        _budget_line(usage.get("budget", {})),
        f"calls: {totals.get('calls', 0):,}  tokens in: {totals.get('input_tokens', 0):,}  "
        f"out: {totals.get('output_tokens', 0):,}  cost: ${totals.get('cost_usd', 0.0):.4f}",
    ])


def cmd_llm(args: argparse.Namespace) -> None:
    args.llm_handler(args)


def cmd_status(args: argparse.Namespace) -> None:
    status = cli_common.client_of(args).llm_status()
    cli_common.print_result(args, status, render_status(status))


def cmd_usage(args: argparse.Namespace) -> None:
    usage = cli_common.client_of(args).llm_usage(args.tenant)
    cli_common.print_result(args, usage, render_usage(usage))


def cmd_budget(args: argparse.Namespace) -> None:
    limit = None if args.unlimited else args.tokens
    budget = cli_common.client_of(args).set_llm_budget(args.tenant, limit, args.period)
    cli_common.print_result(args, budget, f"tenant {args.tenant}\n{_budget_line(budget)}")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tokens must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--tokens must be at least 1, not {value}")
    return value


def add_llm_commands(add: AddCommand) -> None:
    """`ymera llm <command>`."""
    group = add("llm", cmd_llm, "language models: deployments, token usage and budgets")
    commands = group.add_subparsers(dest="llm_command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], None],
                help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(llm_handler=handler)
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                         help="print JSON for scripts")
        sub.add_argument("--address", default=argparse.SUPPRESS,
                         help="Ray cluster to use (default: YMERA_RAY_ADDRESS, else the local "
                              "head)")
        return sub

    command("status", cmd_status, "model groups, deployments and their circuit breakers")
    usage = command("usage", cmd_usage, "a tenant's token budget, tokens and cost this period")
    usage.add_argument("--tenant", default="default", help="whose usage (default: default)")
    budget = command("budget", cmd_budget, "set a tenant's token budget (operators)")
    budget.add_argument("tenant", help="the tenant")
    size = budget.add_mutually_exclusive_group(required=True)
    size.add_argument("--tokens", type=_positive, help="tokens per period")
    size.add_argument("--unlimited", action="store_true", help="no limit of its own: back to "
                      "YMERA_LLM_BUDGET_TOKENS when that is set, else unlimited (still counted)")
    budget.add_argument("--period", choices=["month", "day", "total"],
                        help="what the budget counts over (default: unchanged, else month)")
