"""`ymera plan "REQUEST"`: a workflow written by the configured language model, for review.

    ymera plan "total the revenue per region in the rows, then flag regions under 100"
    ymera plan "..." --input '{"rows": [...]}' --save plan.yaml   # edit, then
    ymera workflow submit plan.yaml --input '{"rows": [...]}'
    ymera plan "..." --input '{"rows": [...]}' --run              # accept it as planned

Guarantees: nothing runs without `--run`; the plan printed (or saved) is the one checked
against the registered agent types and the workflow rules; `--save` writes the document as
YAML (or JSON for a .json name) that `ymera workflow submit` accepts, and never overwrites a
file unless `--force`. The input, when given, is shown to the model as its shape only (field
names and kinds), and becomes the run's input with `--run`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster import cli_common
from cluster.batch.workflows import WORKFLOW_SUFFIXES
from storage.errors import InvalidRequest

AddCommand = Callable[[str, Callable[[argparse.Namespace], None], str], argparse.ArgumentParser]


def cmd_plan(args: argparse.Namespace) -> None:
    from cluster.workflow_cli import run_input

    given = args.input is not None or args.input_file is not None
    value = run_input(args) if given else None
    target = _save_target(args.save, args.force) if args.save else None
    result = cli_common.client_of(args).plan(args.request, run=args.run, input=value,
                                             model=args.model, tenant=args.tenant)
    if target is not None:
        save_document(target, result["document"], args.request)
        result = {**result, "saved": str(target)}
    cli_common.print_result(args, result, plan_text(result, value))


def plan_text(result: dict[str, Any], run_input: Any = None) -> str:
    """The plan as a person reviews it: the rendered steps, the refused attempts before it,
    what the model calls used, and what happened (or what to do next)."""
    lines = [result["rendered"]]
    problems = result.get("problems") or []
    if problems:
        lines.append(f"refused before this plan ({len(problems)}):")
        lines.extend(f"  - {problem}" for problem in problems)
    usage = result.get("usage") or {}
    if usage.get("calls"):
        models = ", ".join(usage.get("models") or []) or "the model"
        lines.append(f"planned by {models} in {usage['calls']} call(s): "
                     f"{usage.get('input_tokens', 0)} tokens in, "
                     f"{usage.get('output_tokens', 0)} out, "
                     f"${usage.get('cost_usd', 0.0):.4f}")
    if result.get("run_id"):
        run_id = result["run_id"]
        lines.append(f"started run {run_id}: follow it with `ymera workflow get {run_id}` or "
                     f"`ymera workflow events {run_id} --follow`")
        return "\n".join(lines)
    saved = result.get("saved")
    submit_input = "" if run_input is None else " --input '" + json.dumps(run_input) + "'"
    if saved:
        lines.append(f"saved to {saved}; nothing ran. Edit it if you like, then run it with "
                     f"`ymera workflow submit {saved}{submit_input}`")
    else:
        lines.append("nothing ran: add --run to start it as planned, or --save FILE to edit "
                     "it and run it with `ymera workflow submit FILE`")
    return "\n".join(lines)


def _save_target(name: str, force: bool) -> Path:
    """Where `--save` writes, checked before the model is asked (a bad name wastes no
    tokens)."""
    path = Path(name).expanduser()
    if path.suffix.lower() not in WORKFLOW_SUFFIXES:
        raise InvalidRequest(f"--save {name}: a workflow file ends in .yaml, .yml or .json",
                             {"field": "--save"})
    if path.exists() and not force:
        raise InvalidRequest(f"--save {name}: the file exists; give --force to replace it",
                             {"field": "--save"})
    if not path.parent.is_dir():
        raise InvalidRequest(f"--save {name}: no directory {path.parent}", {"field": "--save"})
    return path


def save_document(path: Path, document: dict[str, Any], request: str) -> None:
    """Write `document` to `path`: JSON for a .json name, else YAML headed by the request as
    comments."""
    if path.suffix.lower() == ".json":
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    else:
        import yaml

        header = "".join(f"# {line}\n" for line in request.strip().splitlines())
        text = ("# Planned by `ymera plan` from the request:\n" + header
                + "# Review and edit it, then run it with `ymera workflow submit <this file>`.\n"
                + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100))
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidRequest(f"cannot write {path}: {exc.strerror or exc}",
                             {"field": "--save"}) from None


def add_plan_commands(add: AddCommand) -> None:
    """`ymera plan`."""
    plan = add("plan", cmd_plan, "turn a request into a workflow with the configured language "
               "model; shows it for review (nothing runs without --run)")
    plan.add_argument("request", help="what the workflow should do, in words")
    plan.add_argument("--run", action="store_true",
                      help="start the plan as a workflow run at once and print its id")
    given = plan.add_mutually_exclusive_group()
    given.add_argument("--input", help="the run's input, JSON (its shape guides the plan)")
    given.add_argument("--input-file", metavar="FILE",
                       help="the run's input from a JSON file (- for standard input)")
    plan.add_argument("--model", metavar="GROUP", help="the model group to plan with "
                      "(default: the configured default group)")
    plan.add_argument("--save", metavar="FILE", help="write the plan as YAML (.yaml/.yml) or "
                      "JSON (.json) to edit and run with `ymera workflow submit FILE`")
    plan.add_argument("--force", action="store_true", help="with --save, replace the file")
    plan.add_argument("--tenant", default="default", help="whose budget pays and whose run "
                      "it is (default: default)")
