"""A workflow run's graph for its console page: the steps laid out by dependency depth, as
inline SVG coordinates for `templates/_run_graph.html` (no script draws it).

    graph = run_graph(run)      # run: `RunDetail.to_json()`, its spec and step rows

Guarantees:
- every step of the run's spec is one node, in the column of its depth (the longest chain
  of `depends_on` before it; a step depending on nothing is at depth 0), in spec order
  within a column; each dependency is one edge from the step it names to the step that
  names it, always pointing right; a dependency on a step the spec lacks, or one that would
  close a cycle (validation forbids both), is left out, never an error;
- a node carries its state as text (shown, and in its accessible name): the step's own row,
  and for a fan-out step how many of its items succeeded; a step with no row yet is
  `waiting`;
- a spec that is not a mapping of steps yields an empty graph, never an error, so a page
  never fails for its picture (the table below it stays the full account).
"""

from __future__ import annotations

from typing import Any, Final

NODE_W: Final = 150
NODE_H: Final = 44
GAP_X: Final = 50
GAP_Y: Final = 16
PAD: Final = 6
LABEL_CHARS: Final = 18


def _spec_steps(run: dict[str, Any]) -> list[dict[str, Any]]:
    spec = run.get("spec")
    steps = spec.get("steps") if isinstance(spec, dict) else None
    if not isinstance(steps, list):
        return []
    return [s for s in steps if isinstance(s, dict) and isinstance(s.get("id"), str)]


def depths(steps: list[dict[str, Any]]) -> dict[str, int]:
    """Each step's dependency depth: 0 without dependencies, else one more than its deepest
    dependency's (a cycle, which validation forbids, is cut rather than followed)."""
    needs = {s["id"]: [d for d in s.get("depends_on") or [] if isinstance(d, str)]
             for s in steps}
    found: dict[str, int] = {}

    def depth(step_id: str, seen: frozenset[str]) -> int:
        if step_id in found:
            return found[step_id]
        parents = [d for d in needs.get(step_id, []) if d in needs and d not in seen]
        value = 1 + max((depth(d, seen | {d}) for d in parents), default=-1)
        found[step_id] = value
        return value

    for step_id in needs:
        depth(step_id, frozenset({step_id}))
    return found


def _state(step_id: str, rows: list[dict[str, Any]]) -> tuple[str, str]:
    """The step's status and the text shown for it."""
    own = [r for r in rows if r.get("step_id") == step_id and r.get("map_index", -1) < 0]
    status = str(own[0].get("status")) if own else "waiting"
    items = [r for r in rows if r.get("step_id") == step_id and r.get("map_index", -1) >= 0]
    if not items:
        return status, status.replace("_", " ")
    done = sum(1 for r in items if r.get("status") == "succeeded")
    return status, f"{status.replace('_', ' ')} · {done}/{len(items)} items"


def run_graph(run: dict[str, Any]) -> dict[str, Any]:
    """Nodes and edges of `run`'s graph in SVG coordinates, and the picture's size."""
    steps = _spec_steps(run)
    if not steps:
        return {"nodes": [], "edges": [], "width": 0, "height": 0}
    level = depths(steps)
    rows = [r for r in run.get("steps") or [] if isinstance(r, dict)]
    columns: dict[int, int] = {}
    nodes: dict[str, dict[str, Any]] = {}
    for step in steps:
        column = level[step["id"]]
        row = columns.get(column, 0)
        columns[column] = row + 1
        status, text = _state(step["id"], rows)
        label = step["id"] if len(step["id"]) <= LABEL_CHARS \
            else step["id"][:LABEL_CHARS - 1] + "…"
        nodes[step["id"]] = {
            "id": step["id"], "label": label, "status": status, "state_text": text,
            "x": PAD + column * (NODE_W + GAP_X), "y": PAD + row * (NODE_H + GAP_Y),
            "depth": column, "depends_on": [d for d in step.get("depends_on") or []
                                            if d in level and level[d] < column]}
    edges = []
    for node in nodes.values():
        for parent_id in node["depends_on"]:
            parent = nodes[parent_id]
            x1, y1 = parent["x"] + NODE_W, parent["y"] + NODE_H / 2
            x2, y2 = node["x"], node["y"] + NODE_H / 2
            middle = (x1 + x2) / 2
            edges.append({"from": parent_id, "to": node["id"],
                          "d": f"M{x1} {y1} C{middle} {y1} {middle} {y2} {x2 - 4} {y2}"})
    width = PAD * 2 + (max(columns) + 1) * NODE_W + max(columns) * GAP_X
    height = PAD * 2 + max(columns.values()) * NODE_H + (max(columns.values()) - 1) * GAP_Y
    return {"nodes": list(nodes.values()), "edges": edges, "width": width, "height": height,
            "node_w": NODE_W, "node_h": NODE_H}
