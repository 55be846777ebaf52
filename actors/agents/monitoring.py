"""The `monitoring` agent: answers a tenant's questions about the platform under its tasks.

A task asks about one topic, named in payload "topic" or read from the words of its description:

    nodes     how many of the cluster's nodes are alive
    pools     each agent type's replicas: live against desired, attempts in flight, restarts
    queues    tasks waiting per agent type against the queue limit, and what is running
    failures  tasks finished in a window per agent type: outcomes, success rate, retries
    latency   attempts started in a window per agent type: mean and p95 duration, timeouts
    overview  a line of each (the default, and the answer when the words point several ways)

Optional payload: "agent_type" narrows pools, queues, failures and latency to one type (a
description naming exactly one registered type does the same); "window_s" is how far back
failures and latency look (60 s to 7 days, default an hour, or what the description says:
"in the last 30 minutes", "today"). The answer is a JSON object with
the figures and a one-sentence "summary".

Every answer is the asking task's tenant's: task counts, outcomes, success rates, dead letters
and latencies count that tenant's tasks only. What all tenants share (pools and their replica
counts, queue lengths, the number of live nodes) is shown as it is; what identifies the machines
and processes under them (node ids, addresses, resources, replica pids) is not: platform
administrators read those on the Ray dashboard and in `GET /api/v1/agents`.

The facts come through the `ClusterFacts` port the replica gives the agent (`self.cluster`:
the orchestrator's `status()`, `agent_stats(window_s, tenant)`, `task_counts(tenant)`, and the
cluster's nodes), gathered in `Monitoring.observe`, which keeps only the shared parts of
`status()` (`shared_status`). The agent never touches Ray; everything else is pure, so it is
tested with given facts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
from typing import Any

from actors.agent import Agent, json_type
from actors.errors import InvalidTaskInput, RetryableAgentError
from storage.messages import AgentSpec, AgentTask, Resources

TOPICS = ("overview", "nodes", "pools", "queues", "failures", "latency")
PAYLOAD_KEYS = ("topic", "agent_type", "window_s")
DEFAULT_WINDOW_S = 3600.0
WINDOW_RANGE_S = (60.0, 7 * 86400.0)

_TOPIC_WORDS = {
    "nodes": (r"\bnodes?\b", r"\bcpus?\b", r"\bgpus?\b", r"\bmemory\b", r"\bmachines?\b"),
    "pools": (r"\breplicas?\b", r"\bpools?\b", r"\bhealth", r"\brestart"),
    "queues": (r"\bqueue", r"\bbacklog", r"\bwaiting\b", r"\bpending\b"),
    "failures": (r"\bfail", r"\berror", r"\bdead\b", r"\bsuccess rates?\b",
                 r"\bretr(?:y|ies|ied)\b"),
    "latency": (r"\bslow", r"\blatency\b", r"\bduration", r"\bp95\b"),
}
_TOPIC_PATTERNS = {topic: re.compile("|".join(words), re.IGNORECASE)
                   for topic, words in _TOPIC_WORDS.items()}
_WINDOW_WORDS = re.compile(
    r"\b(?:last|past)\s+(?:(\d+)\s+)?(minute|hour|day|week)s?\b|\b(today|this week)\b",
    re.IGNORECASE)
_UNIT_S = {"minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400, "today": 86400,
           "this week": 7 * 86400}
_NEEDS_STATS = frozenset({"failures", "latency", "overview"})
_NEEDS_COUNTS = frozenset({"failures", "overview"})
_NEEDS_CLUSTER = frozenset({"nodes", "overview"})
SHARED_STATUS = ("accepting", "uptime_s", "storage", "queue_max", "queued", "running",
                 "pools", "agent_types")
"""The parts of the orchestrator's `status()` every tenant shares; its platform-wide task
counts and dead letters stay out."""
SHARED_POOL = ("agent_type", "desired", "live", "min_replicas", "max_replicas", "concurrency",
               "restarts", "queued", "draining")
SHARED_REPLICA = ("ready", "in_flight", "draining")


@dataclasses.dataclass(frozen=True)
class Question:
    """What a task asks: a topic, an optional agent type, and how far back to look."""

    topic: str
    agent_type: str | None = None
    window_s: float = DEFAULT_WINDOW_S
    description: str = ""


@dataclasses.dataclass(frozen=True)
class Observation:
    """What the platform said, for one tenant: the shared part of the orchestrator's
    `status()` (`shared_status`), the tenant's `agent_stats()` and `task_counts()` (tasks per
    status), and the cluster's nodes."""

    status: dict[str, Any]
    stats: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    nodes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    task_counts: dict[str, int] = dataclasses.field(default_factory=dict)


def shared_status(status: dict[str, Any]) -> dict[str, Any]:
    """The parts of `Orchestrator.status()` any tenant may see: pools (sizes and load, no
    replica names or pids), queue lengths, whether the platform accepts tasks."""
    shared = {key: status[key] for key in SHARED_STATUS if key in status}
    shared["pools"] = [
        {**{k: pool[k] for k in SHARED_POOL if k in pool},
         "replicas": [{k: r[k] for k in SHARED_REPLICA if k in r}
                      for r in pool.get("replicas", [])]}
        for pool in status.get("pools", [])]
    return shared


# ----------------------------------------------------------------- reading the question


def infer_topic(description: str) -> str:
    """The one topic the description's words point to, or "overview" for none or several."""
    matched = [topic for topic, pattern in _TOPIC_PATTERNS.items() if pattern.search(description)]
    return matched[0] if len(matched) == 1 else "overview"


def infer_window(description: str) -> float | None:
    """The window a description names ("in the last 30 minutes", "past day", "today"), kept
    within the allowed range, or None."""
    match = _WINDOW_WORDS.search(description)
    if match is None:
        return None
    count, unit, phrase = match.groups()
    seconds = int(count or 1) * _UNIT_S[(unit or phrase).lower()]
    return float(min(max(seconds, WINDOW_RANGE_S[0]), WINDOW_RANGE_S[1]))


def read_question(payload: dict[str, Any], description: str = "") -> Question:
    """The question a task asks, or `InvalidTaskInput` naming the wrong field."""
    unknown = sorted(set(payload) - set(PAYLOAD_KEYS))
    if unknown:
        raise InvalidTaskInput(
            f"payload {unknown[0]!r} is not something this agent reads; it reads "
            f"{', '.join(PAYLOAD_KEYS)}", {"field": unknown[0], "accepted": list(PAYLOAD_KEYS)})
    topic = payload.get("topic")
    if topic is None:
        topic = infer_topic(description)
    elif not isinstance(topic, str) or topic.strip().lower() not in TOPICS:
        shown = repr(topic) if isinstance(topic, str) else json_type(topic)
        raise InvalidTaskInput(f"unknown topic {shown}; one of: {', '.join(TOPICS)}",
                               {"field": "topic", "accepted": list(TOPICS)})
    agent_type = payload.get("agent_type")
    if agent_type is not None and not isinstance(agent_type, str):
        raise InvalidTaskInput(
            f"payload 'agent_type' must be a string, got {json_type(agent_type)}",
            {"field": "agent_type"})
    window_s = payload.get("window_s")
    if window_s is None:
        window_s = infer_window(description)
    return Question(topic.strip().lower(), agent_type, _window(window_s), description)


def _window(value: Any) -> float:
    if value is None:
        return DEFAULT_WINDOW_S
    low, high = WINDOW_RANGE_S
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or not low <= value <= high):
        shown = value if isinstance(value, (int, float)) else json_type(value)
        raise InvalidTaskInput(
            f"payload 'window_s' must be a number of seconds from {low:g} to {high:g} "
            f"(7 days), got {shown}", {"field": "window_s", "min": low, "max": high})
    return float(value)


def known_agent_types(status: dict[str, Any]) -> list[str]:
    """Every agent type the orchestrator has registered."""
    pools = status.get("pools", [])
    return sorted({*status.get("agent_types", {}), *(pool["agent_type"] for pool in pools)})


def resolve_agent_type(question: Question, known: list[str]) -> str | None:
    """The agent type to narrow to: the one asked for (it must exist), else the one registered
    type the description names, else None."""
    if question.agent_type is not None:
        if question.agent_type not in known:
            raise InvalidTaskInput(
                f"unknown agent_type {question.agent_type!r}; known types: {', '.join(known)}",
                {"field": "agent_type", "accepted": known})
        return question.agent_type
    words = question.description.lower()
    named = [name for name in known
             if re.search(rf"\b(?:{re.escape(name)}|{re.escape(name.replace('_', ' '))})\b", words)]
    return named[0] if len(named) == 1 else None


# ----------------------------------------------------------------- shaping the answer


def answer(question: Question, observation: Observation) -> dict[str, Any]:
    """The report for `question` from what was observed: figures plus a "summary" sentence."""
    agent_type = resolve_agent_type(question, known_agent_types(observation.status))
    reports = {
        "nodes": lambda: nodes_report(observation),
        "pools": lambda: pools_report(observation.status, agent_type),
        "queues": lambda: queues_report(observation.status, agent_type),
        "failures": lambda: failures_report(observation, agent_type, question.window_s),
        "latency": lambda: latency_report(observation.stats, agent_type, question.window_s),
    }
    head: dict[str, Any] = {"topic": question.topic, "agent_type": agent_type}
    if question.topic in _NEEDS_STATS:
        head["window_s"] = question.window_s
    if question.topic != "overview":
        return {**head, **reports[question.topic]()}
    parts = {topic: report() for topic, report in reports.items()}
    status = observation.status
    platform = {"accepting": status.get("accepting"), "storage": status.get("storage"),
                "uptime_s": status.get("uptime_s")}
    window = describe_window(question.window_s)
    lines = [_overview_line(topic, parts[topic], window) for topic in reports]
    if status.get("accepting") is False:
        lines.insert(0, "the platform is draining and accepts no new tasks")
    summary = "; ".join(lines)
    return {**head, "platform": platform, **parts,
            "summary": summary[0].upper() + summary[1:] + "."}


def nodes_report(observation: Observation) -> dict[str, Any]:
    """How many nodes are alive: no node ids, addresses or resources, which are the
    platform's (a platform administrator reads them on the Ray dashboard)."""
    count = len(observation.nodes)
    alive = sum(1 for node in observation.nodes if node.get("Alive"))
    summary = (f"{alive} of {count} node{_s(count)} alive. Node addresses and resources are "
               "shown to platform administrators only")
    return {"alive": alive, "nodes": count, "summary": summary + "."}


def pools_report(status: dict[str, Any], agent_type: str | None) -> dict[str, Any]:
    pools = [{
        "agent_type": pool["agent_type"], "desired": pool["desired"], "live": pool["live"],
        "healthy": pool["live"] >= pool["desired"],
        "in_flight": sum(r.get("in_flight", 0) for r in pool.get("replicas", [])),
        "concurrency": pool.get("concurrency"), "restarts": pool.get("restarts", 0),
        "replicas": [{k: r[k] for k in SHARED_REPLICA if k in r}
                     for r in pool.get("replicas", [])],
    } for pool in status.get("pools", []) if agent_type in (None, pool["agent_type"])]
    short = [p for p in pools if not p["healthy"]]
    restarts = sum(p["restarts"] for p in pools)
    if not pools:
        summary = "No agent pools are running."
    elif short:
        summary = (f"{len(short)} of {len(pools)} pool{_s(len(pools))} below strength: "
                   + ", ".join(f"{p['agent_type']} {p['live']}/{p['desired']} live"
                               for p in short) + ".")
    elif len(pools) == 1:
        pool = pools[0]
        summary = (f"{pool['agent_type']} is at strength with {pool['live']} of "
                   f"{pool['desired']} replicas live and {pool['in_flight']} attempts in flight.")
    else:
        summary = (f"All {len(pools)} pools are at strength "
                   f"({sum(p['live'] for p in pools)} replicas live).")
    if pools:
        summary += (f" {restarts} replica restart{_s(restarts)} since the orchestrator started.")
    return {"healthy": not short, "restarts": restarts, "pools": pools, "summary": summary}


def queues_report(status: dict[str, Any], agent_type: str | None) -> dict[str, Any]:
    queued: dict[str, int] = status.get("queued", {})
    pools = {pool["agent_type"]: pool for pool in status.get("pools", [])}
    names = sorted({*queued, *pools} if agent_type is None else {agent_type})
    queues = []
    for name in names:
        pool = pools.get(name, {})
        queues.append({
            "agent_type": name, "queued": queued.get(name, 0),
            "in_flight": sum(r.get("in_flight", 0) for r in pool.get("replicas", [])),
            "live_replicas": pool.get("live", 0),
        })
    queues.sort(key=lambda q: (-q["queued"], q["agent_type"]))
    waiting = sum(q["queued"] for q in queues)
    queue_max = status.get("queue_max")
    running = (status.get("running", 0) if agent_type is None
               else sum(q["in_flight"] for q in queues))
    busy = [f"{q['agent_type']} {q['queued']}" for q in queues if q["queued"]]
    summary = f"{waiting} task{_s(waiting)} waiting" + (f" ({', '.join(busy)})" if busy else "")
    summary += f", {running} running"
    if queue_max and agent_type is None:
        summary += f"; the queue is {_percent(waiting / queue_max)} full ({queue_max} max)"
    return {"queued": waiting, "running": running, "queue_max": queue_max, "queues": queues,
            "summary": summary + "."}


def failures_report(observation: Observation, agent_type: str | None,
                    window_s: float) -> dict[str, Any]:
    rows = [{"agent_type": name, **{k: stats.get(k, 0) for k in (
                "finished", "succeeded", "failed", "dead", "cancelled", "attempts", "retried",
                "lost", "timeouts")},
             "success_rate": stats.get("success_rate")}
            for name, stats in sorted(observation.stats.items())
            if agent_type in (None, name) and (stats.get("finished") or stats.get("attempts"))]
    rows.sort(key=lambda r: (r["success_rate"] is None, r["success_rate"] or 0.0,
                             r["agent_type"]))
    totals = {k: sum(r[k] for r in rows)
              for k in ("finished", "succeeded", "failed", "dead", "cancelled", "retried")}
    rate = totals["succeeded"] / totals["finished"] if totals["finished"] else None
    window = describe_window(window_s)
    if not totals["finished"]:
        summary = f"No tasks finished in the last {window}"
    else:
        summary = (f"In the last {window}, {totals['finished']} task{_s(totals['finished'])} "
                   f"finished and {_percent(rate)} succeeded ({totals['failed']} failed, "
                   f"{totals['dead']} dead, {totals['cancelled']} cancelled)")
        worst = rows[0]
        if len(rows) > 1 and worst["success_rate"] is not None and worst["success_rate"] < 1:
            summary += f"; lowest: {worst['agent_type']} at {_percent(worst['success_rate'])}"
    if totals["retried"]:
        summary += (f"; {totals['retried']} attempt{_s(totals['retried'])} ended in an error, "
                    "timeout or loss")
    dead_letters = observation.task_counts.get("dead", 0)
    return {**totals, "success_rate": rate, "dead_letters": dead_letters, "agents": rows,
            "summary": summary + "."}


def latency_report(stats: dict[str, dict[str, Any]], agent_type: str | None,
                   window_s: float) -> dict[str, Any]:
    rows = [{"agent_type": name, "attempts": s.get("attempts", 0), "timed": s.get("timed", 0),
             "duration_mean_s": s.get("duration_mean_s"),
             "duration_p95_s": s.get("duration_p95_s"),
             "timeouts": s.get("timeouts", 0), "lost": s.get("lost", 0)}
            for name, s in sorted(stats.items())
            if agent_type in (None, name) and s.get("attempts")]
    rows.sort(key=lambda r: (r["duration_p95_s"] is None, -(r["duration_p95_s"] or 0.0),
                             r["agent_type"]))
    timeouts = sum(r["timeouts"] for r in rows)
    window = describe_window(window_s)
    timed = [r for r in rows if r["duration_p95_s"] is not None]
    if not timed:
        summary = f"No attempts finished in the last {window}"
    else:
        slowest = timed[0]
        summary = (f"{'Slowest' if len(timed) > 1 else 'Attempt time'} in the last {window}: "
                   f"{slowest['agent_type']} p95 {_seconds(slowest['duration_p95_s'])}, mean "
                   f"{_seconds(slowest['duration_mean_s'])} over {slowest['timed']} "
                   f"attempt{_s(slowest['timed'])}")
    if timeouts:
        summary += f"; {timeouts} timed out"
    return {"timeouts": timeouts, "agents": rows, "summary": summary + "."}


def _overview_line(topic: str, report: dict[str, Any], window: str) -> str:
    if topic == "nodes":
        return f"{report['alive']} of {report['nodes']} nodes alive"
    if topic == "pools":
        pools = report["pools"]
        healthy = sum(1 for p in pools if p["healthy"])
        return f"{healthy} of {len(pools)} pools at strength"
    if topic == "queues":
        return f"{report['queued']} tasks waiting, {report['running']} running"
    if topic == "failures":
        if not report["finished"]:
            return f"no tasks finished in the last {window}"
        return (f"{_percent(report['success_rate'])} of {report['finished']} tasks finished "
                f"in the last {window} succeeded")
    timed = [r for r in report["agents"] if r["duration_p95_s"] is not None]
    if not timed:
        return f"no attempts finished in the last {window}"
    return f"slowest p95 {_seconds(timed[0]['duration_p95_s'])} ({timed[0]['agent_type']})"


def describe_window(window_s: float) -> str:
    """"hour", "2 hours", "90 seconds": the window as the end of "in the last ..."."""
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if window_s % size == 0:
            count = int(window_s // size)
            return unit if count == 1 else f"{count} {unit}s"
    return f"{window_s:g} seconds"


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.1%}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


# ----------------------------------------------------------------- the agent


class Monitoring(Agent):
    """Answers questions about the platform's pools, queues, failures, latency and nodes."""

    spec = AgentSpec(
        name="monitoring",
        description="Answers questions about the YMERA platform and its Ray cluster: which nodes "
        "are alive and what CPU and memory is free, whether agent pools are at strength, how "
        "long the queues are, which agent types fail and how often, and how slow their "
        "attempts are.",
        capabilities=(
            "list cluster nodes with their CPU, GPU and memory, and what is free",
            "report agent pool health: live replicas against desired, restarts",
            "report queue backlogs per agent type against the queue limit",
            "report task outcomes and success rates per agent type over a time window",
            "report attempt latency per agent type: mean and p95 duration, timeouts",
            "count retries, lost attempts and dead-lettered tasks",
            "give a one-line overview of the platform's health",
            "check whether the platform or the cluster is up and healthy",
        ),
        examples=(
            "How many nodes are alive in the cluster?",
            "How much CPU and memory is free right now?",
            "Are all agent pools healthy?",
            "How many calculator replicas are running?",
            "Which pools have restarted replicas?",
            "How long is the queue?",
            "Is there a backlog of tasks waiting?",
            "Which agent type fails the most?",
            "What is the success rate of data_processor tasks today?",
            "How many tasks were dead-lettered in the last hour?",
            "Why are tasks failing with errors?",
            "Which agent is the slowest?",
            "What is the p95 latency of the calculator?",
            "What is the average attempt duration?",
            "Give me an overview of the platform",
            "Is the platform healthy?",
            "How many tasks are pending and how many are running?",
            "what's the status of the cluster",
            "how many worker nodes are up",
            "how much CPU is in use",
            "GPU availability in the cluster",
            "free memory on each node",
            "is every pool running the replicas it should",
            "replica restarts in the last hour",
            "which queues are backed up",
            "queue length per agent type",
            "how many tasks are in flight",
            "failure rate per agent type today",
            "error counts by agent",
            "which agents had errors in the last 10 minutes",
            "the slowest agent type by p95 latency",
            "how many tasks timed out",
            "how many dead letters are there",
            "retry count over the last day",
            "is anything broken right now",
            "are the agents keeping up with the load",
            "how many tasks succeeded in the last hour",
            "show me the error rate for the last 24 hours",
            "which node has the least free memory",
            "are any tasks stuck in the queue",
            "how many tasks has each agent type finished today",
        ),
        resources=Resources(num_cpus=0.05),
        concurrency=8,
        replicas=1,
        payload_hint={"topic": "failures", "window_s": 3600},
    )

    async def run(self, task: AgentTask) -> dict[str, Any]:
        question = read_question(task.payload, task.description or "")
        return answer(question, await self.observe(question, task.tenant))

    async def observe(self, question: Question, tenant: str) -> Observation:
        """Ask the platform (`self.cluster`, set by the replica) what `question` needs, for
        `tenant`: the shared part of the platform's status and that tenant's figures."""
        cluster = self.cluster
        if cluster is None:
            raise RetryableAgentError("this replica was given no way to ask about the cluster")
        stats = (cluster.agent_stats(question.window_s, tenant)
                 if question.topic in _NEEDS_STATS else _nothing())
        counts = (cluster.task_counts(tenant)
                  if question.topic in _NEEDS_COUNTS else _nothing())
        status, stats, counts = await asyncio.gather(cluster.status(), stats, counts)
        nodes = await cluster.nodes() if question.topic in _NEEDS_CLUSTER else []
        return Observation(status=shared_status(status), stats=stats or {},
                           nodes=nodes, task_counts=counts or {})


async def _nothing() -> None:
    return None
