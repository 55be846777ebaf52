"""Turn a request into a workflow with the platform's language model, review it, then run it.

    # a platform with a model: any OpenAI-compatible endpoint
    YMERA_LLM_BASE_URL=http://127.0.0.1:11434/v1 YMERA_LLM_MODEL=llama3.1 ymera up
    python examples/plan_python.py                  # plan, show, ask before running
    python examples/plan_python.py --yes            # plan and run without asking
    python examples/plan_python.py "your own request" --input rows.json

`client.plan` asks the model for a workflow over the registered agent types and checks it
(unknown agents, cycles, bad references and limits are refused and the model asked again, a
bounded number of times) before anything is shown; nothing runs. The script prints the plan,
and only after you accept it submits the very document you reviewed with
`client.submit_workflow` (you could edit `plan["document"]` first, or save it and use
`ymera workflow submit FILE`). `client.plan(..., run=True)` does both in one call.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REQUEST = ("Total the sales per region in the rows I give you, then add the region totals up "
           "into one grand total.")
SAMPLE_INPUT: dict[str, Any] = {"rows": [
    {"region": "north", "sales": 120}, {"region": "south", "sales": 80},
    {"region": "north", "sales": 45.5}, {"region": "east", "sales": 230},
]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("request", nargs="?", default=REQUEST, help="what the workflow should do")
    parser.add_argument("--input", type=Path, help="a JSON file with the run's input "
                        "(default: a few sample rows)")
    parser.add_argument("--yes", action="store_true", help="run the plan without asking")
    parser.add_argument("--wait", type=float, default=120.0,
                        help="seconds to wait for the run to finish (default 120)")
    args = parser.parse_args(argv)
    run_input = json.loads(args.input.read_text()) if args.input else SAMPLE_INPUT

    from cluster.client import Client
    from cluster.workflow_view import render_run
    from storage.errors import YmeraError
    from storage.workflow_records import RunStatus

    try:
        client = Client.connect()
        plan = client.plan(args.request, input=run_input)  # runs nothing
    except YmeraError as exc:  # no platform or no model configured, or no valid plan
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(plan["rendered"])
    for problem in plan["problems"]:
        print(f"  (an earlier attempt was refused: {problem})")
    usage = plan["usage"]
    print(f"planned in {usage['calls']} call(s), {usage['input_tokens']} + "
          f"{usage['output_tokens']} tokens, ${usage['cost_usd']:.4f}")
    if not args.yes and input("\nRun this workflow? [y/N] ").strip().lower() not in ("y", "yes"):
        print("nothing ran. The document:\n" + json.dumps(plan["document"], indent=2))
        return 0
    try:
        detail = client.submit_workflow(plan["document"], run_input, wait_s=args.wait)
    except YmeraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render_run(detail))
    return 0 if detail.run.status is RunStatus.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
