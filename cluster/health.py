"""What `ymera status` says about the platform's health.

It reads the numbers the metrics come from: the orchestrator's live state (`status()`: pools,
queues, dead letters) and the stored outcomes of the last few minutes (`agent_stats`), and
names each problem an operator should look at, the same ones the Prometheus alerts watch.
What it prints stays small: each agent type's declared examples (dozens per type) are counted,
and listed only on request (`ymera status --examples`).
"""

from __future__ import annotations

from typing import Any

STATS_WINDOW_S = 300.0
FAILURE_RATIO_BOUND = 0.2
MIN_FINISHED_FOR_RATIO = 5
QUEUE_FULL_WARNING = 0.8


def status_view(status: dict[str, Any], examples: bool = False) -> dict[str, Any]:
    """`status` as `ymera status --json` shows it: every agent type's declared `examples`
    replaced by their `example_count`, unless `examples` asks for them. `status` is unchanged."""
    if examples:
        return status
    return {**status, "agent_types": {
        name: {**{k: v for k, v in spec.items() if k != "examples"},
               "example_count": len(spec.get("examples", ()))}
        for name, spec in status.get("agent_types", {}).items()}}


def examples_report(status: dict[str, Any]) -> str:
    """Every agent type's declared examples, as `ymera status --examples` prints them."""
    lines = []
    for name, spec in sorted(status.get("agent_types", {}).items()):
        lines.append(f"{name} ({len(spec.get('examples', ()))} examples):")
        lines += [f"  - {example}" for example in spec.get("examples", ())]
    return "\n".join(lines)


def problems(status: dict[str, Any], stats: dict[str, dict[str, Any]]) -> list[str]:
    """One sentence per problem; empty when the platform looks healthy."""
    found = []
    if not status["accepting"]:
        found.append("the platform is draining: it accepts no new tasks")
    for pool in status["pools"]:
        if pool["live"] < pool["desired"]:
            found.append(f"pool {pool['agent_type']} has {pool['live']} of {pool['desired']} "
                         "replicas alive")
    for agent_type, figures in sorted(stats.items()):
        finished = figures.get("finished", 0)
        failed = figures.get("failed", 0) + figures.get("dead", 0)
        if finished >= MIN_FINISHED_FOR_RATIO and failed / finished > FAILURE_RATIO_BOUND:
            found.append(f"{agent_type}: {failed} of {finished} tasks failed or died in the "
                         f"last {STATS_WINDOW_S / 60:g} minutes")
    queued = sum(status["queued"].values())
    if queued >= QUEUE_FULL_WARNING * status["queue_max"]:
        found.append(f"the queue is {queued} of {status['queue_max']} tasks: submissions will "
                     "soon be refused")
    if status.get("dead_letters"):
        found.append(f"{status['dead_letters']} dead-lettered tasks (`ymera dead`, "
                     "`ymera requeue ID`)")
    return found


def report(status: dict[str, Any], stats: dict[str, dict[str, Any]]) -> str:
    """The text `ymera status` prints."""
    window = f"{STATS_WINDOW_S / 60:g}m"
    lines = [f"accepting tasks: {status['accepting']}   storage: {status['storage']}   "
             f"running: {status['running']}   dead letters: {status.get('dead_letters', 0)}",
             "tasks: " + ", ".join(f"{k} {v}" for k, v in sorted(status["tasks"].items())),
             f"pools (last {window}: finished, failed or dead, p95 attempt):"]
    for pool in status["pools"]:
        name = pool["agent_type"]
        running = sum(r["in_flight"] for r in pool["replicas"])
        figures = stats.get(name, {})
        finished = figures.get("finished", 0)
        failed = figures.get("failed", 0) + figures.get("dead", 0)
        p95 = figures.get("duration_p95_s")
        recent = (f"{finished} done, {failed / finished:.0%} failed" if finished else "idle")
        if p95 is not None:
            recent += f", p95 {p95:.3g}s"
        size = f"live {pool['live']}/{pool['desired']}"
        if pool.get("draining"):
            size += f" (+{pool['draining']} draining)"
        if pool.get("max_replicas", 0) > pool.get("min_replicas", 0):
            size += f" autoscaling {pool['min_replicas']}..{pool['max_replicas']}"
        if pool.get("bounds_set_by") == "operator":
            size += " (set by operator)"
        lines.append(f"  {name:<15} {size}  queued {status['queued'].get(name, 0)}  running "
                     f"{running}  restarts {pool['restarts']}  | {recent}")
    routing = status.get("routing", {})
    lines.append("routing: " + (f"on, {routing['waiting']} tasks waiting for a route"
                                if routing.get("enabled") else "off (tasks must name a type)"))
    lines += models_report(status.get("llm"))
    if status.get("metrics_address"):
        lines.append(f"metrics: http://{status['metrics_address']}/metrics")
    found = problems(status, stats)
    lines.append("health: " + ("ok" if not found else "needs attention"))
    lines += [f"  - {problem}" for problem in found]
    return "\n".join(lines)


def models_report(llm: dict[str, Any] | None) -> list[str]:
    """The lines about language models: each group's deployments in the order they are tried,
    or how to configure a model when none is."""
    if not llm:
        return []
    if not llm.get("configured"):
        return [f"models: none. {llm.get('hint', '')}".rstrip()]
    lines = [f"models (default group {llm['default_group']}):"]
    for group, deployments in llm["groups"].items():
        tried = ", then ".join(f"{d['name']} ({d['provider']} {d['model']})" for d in deployments)
        lines.append(f"  {group}: {tried}")
    return lines
