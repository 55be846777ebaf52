"""The workflow the crash tests run, in process and on a cluster: a list, a fan-out over it
(`parallelism` at a time), a condition that skips a step and one that runs one, an approval,
and a final step that reads them all. Sleeps (seconds) stretch the steps for a real cluster."""

from __future__ import annotations

from typing import Any

CRASHY_INPUT_BASE = {"never": False, "go": True, "tag": "tagged"}


def crashy(name: str, parallelism: int = 2, list_s: float = 0.0, item_s: float = 0.0,
           final_s: float = 0.0) -> dict[str, Any]:
    def sleeping(payload: dict[str, Any], seconds: float) -> dict[str, Any]:
        return {**payload, "seconds": seconds} if seconds else payload

    return {"name": name, "steps": [
        {"id": "list", "agent_type": "sleeper",
         "payload": sleeping({"echo": "${ input.items }"}, list_s)},
        {"id": "each", "agent_type": "sleeper", "depends_on": ["list"],
         "payload": sleeping({"echo": "${ item }"}, item_s),
         "map_over": {"over": "steps.list.output.echo", "max_width": 10,
                      "parallelism": parallelism}},
        {"id": "never", "agent_type": "sleeper", "depends_on": ["list"],
         "condition": "input.never", "payload": {"echo": "must not run"}},
        {"id": "maybe", "agent_type": "sleeper", "depends_on": ["list"], "condition": "input.go",
         "payload": {"echo": "${ input.tag }"}},
        {"id": "approve", "depends_on": ["each", "maybe"], "approval": {"timeout_s": 600},
         "payload": {"question": "ship ${ input.tag }?"}},
        {"id": "final", "agent_type": "sleeper", "depends_on": ["approve", "never"],
         "payload": sleeping({"echo": "${ [steps.each.output[*].echo, steps.never.output, "
                                      "steps.maybe.output.echo] }"}, final_s)},
    ]}
