"""The report workflow of examples/workflows/report.yaml, written in Python, run on the platform.

    ymera up                                  # a local platform, if none is running
    python examples/workflow_python.py --webhook-url https://hooks.example.com/ymera

`report_workflow()` builds the same workflow as report.yaml with `cluster.workflow_builder`: a
reference to another step's output (`rows.output(...)`) is what makes a step depend on it, so
only `notify`'s wait for `summary` is written out. Both forms compile to the same spec.

The script submits one run with `SAMPLE_INPUT` (or `--input FILE`, a JSON file), waits up to
`--wait` seconds for it to finish and prints each step's state and output. Webhooks are signed,
so the platform needs YMERA_WEBHOOK_SECRET; the URL must be a public address unless the platform
allows private ones (YMERA_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cluster.workflow_builder import Workflow

SAMPLE_INPUT: dict[str, Any] = {
    "rows": [
        {"region": "north", "sales": 120},
        {"region": "south", "sales": 80},
        {"region": "north", "sales": 45.5},
        {"region": "east", "sales": 230},
        {"region": "south", "sales": 19.99},
    ],
    "notes": ("Sales grew in every region this quarter. The north had its best month since the "
              "spring campaign. Returns in the south stayed high, mostly from one late delivery. "
              "The east opened two new accounts and expects more next quarter."),
    "webhook_url": "https://hooks.example.com/ymera",
}


def report_workflow() -> Workflow:
    """data_processor aggregates -> calculator totals -> text_analysis summarizes the notes
    (when there are any) -> communication posts it all to a webhook."""
    wf = Workflow("report", version="1", failure_policy="fail_fast")
    aggregate = wf.step("aggregate", agent_type="data_processor", timeout_s=60, max_attempts=3,
                        payload={"operation": "group_by", "rows": wf.input("rows"),
                                 "by": "region", "aggregates": {"sales": "sum"}})
    total = wf.step("total", agent_type="calculator",
                    payload={"operation": "sum", "numbers": aggregate.output("rows[*].sales")})
    summary = wf.step("summary", agent_type="text_analysis",
                      payload={"operation": "summary", "text": wf.input("notes"), "n": 2})
    summary.when(wf.input("notes"))
    wf.step("notify", agent_type="communication", depends_on=[summary], payload={
        "url": wf.input("webhook_url"),
        "message": {"report": "sales", "total": total.output("value"),
                    "by_region": aggregate.output("rows"),
                    "summary": summary.output("summary")},
    })
    return wf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, help="a JSON file with the run's input "
                        "(default: a small sample)")
    parser.add_argument("--webhook-url", help="where `notify` posts the report")
    parser.add_argument("--wait", type=float, default=120.0,
                        help="seconds to wait for the run to finish (default 120)")
    args = parser.parse_args(argv)
    run_input = json.loads(args.input.read_text()) if args.input else dict(SAMPLE_INPUT)
    if args.webhook_url:
        run_input["webhook_url"] = args.webhook_url

    from cluster.client import Client
    from cluster.workflow_view import render_run
    from storage.errors import YmeraError
    from storage.workflow_records import UNMAPPED, RunStatus

    try:
        client = Client.connect()
        detail = client.submit_workflow(report_workflow(), run_input, wait_s=args.wait)
    except YmeraError as exc:  # no platform running, or the workflow or input refused
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render_run(detail))
    for step in detail.steps:
        if step.map_index == UNMAPPED and step.output is not None:
            print(f"\n{step.step_id} output:\n{json.dumps(step.output, indent=2)}")
    if not detail.run.status.is_finished:
        print(f"\nstill {detail.run.status.value}; follow it with "
              f"`ymera workflow get {detail.run.id}`")
        return 1
    return 0 if detail.run.status is RunStatus.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
