"""A workflow run's graph on its console page: steps in columns by dependency depth, one
edge per dependency, each step's state in text, and a page that never fails for its picture."""

from __future__ import annotations

import re
from typing import Any

import httpx

from serve_apps.console.run_graph import run_graph
from tests.serve_apps.console_support import CONSOLE, signed_in
from tests.serve_apps.test_app_harness import Platform, client, platform
from tests.serve_apps.test_app_workflows import awaiting_approval

__all__ = ["client", "platform"]


def _run(steps: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"spec": {"name": "w", "version": "1", "steps": steps}, "steps": rows}


def _row(step_id: str, status: str, map_index: int = -1) -> dict[str, Any]:
    return {"step_id": step_id, "map_index": map_index, "status": status}


def test_steps_are_laid_out_by_their_longest_chain_of_dependencies() -> None:
    graph = run_graph(_run(
        [{"id": "fetch"}, {"id": "clean", "depends_on": ["fetch"]},
         {"id": "stats", "depends_on": ["fetch"]},
         {"id": "report", "depends_on": ["clean", "stats", "fetch"]},
         {"id": "alone"}],
        [_row("fetch", "succeeded"), _row("clean", "failed"), _row("stats", "running")]))
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert {k: n["depth"] for k, n in nodes.items()} == \
        {"fetch": 0, "clean": 1, "stats": 1, "report": 2, "alone": 0}
    assert nodes["fetch"]["x"] < nodes["clean"]["x"] == nodes["stats"]["x"] < nodes["report"]["x"]
    assert nodes["clean"]["y"] != nodes["stats"]["y"]  # same column, no overlap
    assert sorted((e["from"], e["to"]) for e in graph["edges"]) == [
        ("clean", "report"), ("fetch", "clean"), ("fetch", "report"), ("fetch", "stats"),
        ("stats", "report")]
    assert [nodes[k]["status"] for k in ("fetch", "clean", "stats", "report")] == \
        ["succeeded", "failed", "running", "waiting"]  # no row yet: waiting
    right = max(n["x"] for n in graph["nodes"]) + graph["node_w"]
    bottom = max(n["y"] for n in graph["nodes"]) + graph["node_h"]
    assert right < graph["width"] and bottom < graph["height"]


def test_a_fan_out_step_says_how_many_items_succeeded() -> None:
    graph = run_graph(_run([{"id": "each"}], [
        _row("each", "running"), _row("each", "succeeded", 0), _row("each", "succeeded", 1),
        _row("each", "running", 2)]))
    (node,) = graph["nodes"]
    assert node["status"] == "running" and node["state_text"] == "running · 2/3 items"


def test_a_broken_spec_gives_an_empty_graph_and_unknown_dependencies_are_left_out() -> None:
    assert run_graph({"spec": None, "steps": []})["nodes"] == []
    assert run_graph({"spec": {"steps": "nope"}})["nodes"] == []
    graph = run_graph(_run([{"id": "a", "depends_on": ["ghost", "a"]}, {"no_id": 1}], []))
    assert [n["id"] for n in graph["nodes"]] == ["a"] and graph["edges"] == []


async def test_a_run_page_draws_its_graph_with_each_steps_state_and_keeps_the_table(
        platform: Platform, client: httpx.AsyncClient) -> None:
    run_id = await awaiting_approval(platform, client)
    await signed_in(client, "acme", "viewer")
    page = await client.get(f"{CONSOLE}/runs/{run_id}")
    assert page.status_code == 200
    svg = page.text.split('<svg class="graph"')[1].split("</svg>")[0]
    states = dict(re.findall(r'data-step="([a-z]+)" data-state="([a-z_]+)"', svg))
    assert states == {"first": "succeeded", "check": "awaiting_approval", "after": "waiting"}
    assert 'aria-label="Step check: awaiting approval; after first"' in svg
    assert svg.count('class="edge"') == 2
    for step_id in ("first", "check", "after"):
        assert f'href="#step-{step_id}"' in svg
        assert f'id="step-{step_id}"' in page.text  # the link's target: the step's table row
    assert "<h2>Steps</h2>" in page.text
