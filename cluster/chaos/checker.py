"""The accounting after a chaos run: every operation a client saw acknowledged, checked against
the database.

What it guarantees to report (`check` returns it as JSON-ready data):
- lost: acknowledged tasks and runs that are missing from the database, or not in a terminal
  state once the platform had `settle_s` to finish them;
- duplicated: idempotency keys that a client saw answered with two ids, or that map to two rows,
  and tasks or runs with more than one terminal event (two recorded outcomes);
- malformed event logs: a finished task or run without exactly one terminal event, or a task
  whose attempts are not numbered 1..n without gaps (n = the task's attempt count);
- per fault, the recovery time: from the fault to the next success of the part it hit;
- the worst latency (first try to outcome) of a task in flight during a fault;
- the errors clients saw, by type and code, and those that are not documented retryable ones.

It reads the database directly (never through the fault proxy) with asyncpg.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from typing import Any

import asyncpg

from cluster.chaos.faults import SERVE_KINDS, Fault
from cluster.chaos.load import TENANTS, LoadRecord

TERMINAL_TASK = frozenset({"succeeded", "failed", "dead", "cancelled"})
TERMINAL_RUN = frozenset({"succeeded", "failed", "cancelled"})
RUN_TERMINAL_EVENTS = frozenset(f"run_{status}" for status in TERMINAL_RUN)
EXAMPLES = 10
SUCCESS_EVENT = "succeeded"


def _ts(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


async def _fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def _unfinished(dsn: str, task_ids: list[str], run_ids: list[str]) -> int:
    tasks = await _fetch(dsn, "select count(*) from tasks where id = any($1) and status = any($2)",
                         task_ids, sorted(TERMINAL_TASK))
    runs = await _fetch(dsn, "select count(*) from workflow_runs where id = any($1) "
                        "and status = any($2)", run_ids, sorted(TERMINAL_RUN))
    return len(task_ids) + len(run_ids) - int(tasks[0][0]) - int(runs[0][0])


def wait_settled(dsn: str, record: LoadRecord, settle_s: float) -> float:
    """Wait until every acknowledged task and run is terminal, or `settle_s` passed; returns
    how long it waited."""
    task_ids = [a.id for a in record.acks.values() if a.kind == "task"]
    run_ids = [a.id for a in record.acks.values() if a.kind == "run"]
    started = time.monotonic()
    while time.monotonic() - started < settle_s:
        try:
            if asyncio.run(_unfinished(dsn, task_ids, run_ids)) == 0:
                break
        except (OSError, asyncpg.PostgresError):
            pass
        time.sleep(1.0)
    return time.monotonic() - started


def check(dsn: str, record: LoadRecord, faults: list[Fault],
          load_started_at: float) -> dict[str, Any]:
    return asyncio.run(_check(dsn, record, faults, load_started_at))


async def _check(dsn: str, record: LoadRecord, faults: list[Fault],
                 load_started_at: float) -> dict[str, Any]:
    tenants = list(TENANTS)
    tasks = await _fetch(dsn, "select id, tenant, idempotency_key, status, agent_type, attempts, "
                         "created_at, finished_at from tasks where tenant = any($1)", tenants)
    events = await _fetch(dsn, "select e.task_id, e.kind, e.attempt, e.at, t.agent_type "
                          "from task_events e "
                          "join tasks t on t.id = e.task_id where t.tenant = any($1) "
                          "order by e.id", tenants)
    attempts = await _fetch(dsn, "select a.task_id, a.number from task_attempts a join tasks t "
                            "on t.id = a.task_id where t.tenant = any($1)", tenants)
    runs = await _fetch(dsn, "select id, tenant, idempotency_key, status, created_at, "
                        "finished_at from workflow_runs where tenant = any($1)", tenants)
    run_events = await _fetch(dsn, "select e.run_id, e.kind from workflow_events e join "
                              "workflow_runs r on r.id = e.run_id where r.tenant = any($1) "
                              "and e.kind = any($2)", tenants, sorted(RUN_TERMINAL_EVENTS))
    task_by_id = {r["id"]: r for r in tasks}
    run_by_id = {r["id"]: r for r in runs}

    lost: list[dict[str, Any]] = []
    for ack in record.acks.values():
        row = (task_by_id if ack.kind == "task" else run_by_id).get(ack.id)
        terminal = TERMINAL_TASK if ack.kind == "task" else TERMINAL_RUN
        if row is None or row["status"] not in terminal:
            lost.append({"kind": ack.kind, "id": ack.id, "tenant": ack.tenant, "key": ack.key,
                         "status": None if row is None else row["status"]})

    duplicates: list[dict[str, Any]] = list(record.duplicates)
    acked_keys = {(a.tenant, a.key) for a in record.acks.values()}
    for kind, rows in (("task", tasks), ("run", runs)):
        by_key: dict[tuple[str, str], list[str]] = defaultdict(list)
        for row in rows:
            if row["idempotency_key"]:
                by_key[(row["tenant"], row["idempotency_key"])].append(row["id"])
        duplicates += [{"kind": kind, "tenant": t, "key": k, "ids": ids}
                       for (t, k), ids in by_key.items() if len(ids) > 1 and (t, k) in acked_keys]

    terminal_events: dict[str, int] = Counter()
    for event in events:
        if event["kind"] in TERMINAL_TASK:
            terminal_events[event["task_id"]] += 1
    duplicates += [{"kind": "task_outcome", "id": task_id, "terminal_events": n}
                   for task_id, n in terminal_events.items() if n > 1]
    run_outcomes = Counter(e["run_id"] for e in run_events)
    duplicates += [{"kind": "run_outcome", "id": run_id, "terminal_events": n}
                   for run_id, n in run_outcomes.items() if n > 1]

    numbers: dict[str, list[int]] = defaultdict(list)
    for attempt in attempts:
        numbers[attempt["task_id"]].append(attempt["number"])
    malformed = []
    for row in tasks:
        problems = []
        if row["status"] in TERMINAL_TASK and terminal_events.get(row["id"], 0) != 1:
            problems.append(f"{terminal_events.get(row['id'], 0)} terminal events")
        seen = sorted(numbers.get(row["id"], []))
        if seen != list(range(1, len(seen) + 1)) or len(seen) != row["attempts"]:
            problems.append(f"attempts {seen} for an attempt count of {row['attempts']}")
        if problems:
            malformed.append({"id": row["id"], "status": row["status"], "problems": problems})
    malformed += [{"id": row["id"], "status": row["status"],
                   "problems": [f"{run_outcomes.get(row['id'], 0)} terminal run events"]}
                  for row in runs
                  if row["status"] in TERMINAL_RUN and run_outcomes.get(row["id"], 0) != 1]

    undocumented = [e for e in record.errors if not e.retryable]
    recovery = [_recovery(f, record, events, load_started_at) for f in faults if f.injected]
    by_kind: dict[str, float | None] = {}
    for entry in recovery:
        current = by_kind.get(entry["kind"])
        value = entry["recovery_s"]
        if value is not None and (current is None or value > current):
            by_kind[entry["kind"]] = value
        by_kind.setdefault(entry["kind"], value)

    return {
        "operations": {
            "acknowledged_tasks": sum(a.kind == "task" for a in record.acks.values()),
            "acknowledged_runs": sum(a.kind == "run" for a in record.acks.values()),
            "acknowledged_via": dict(Counter(a.via for a in record.acks.values())),
            "retried_submissions": sum(a.tries > 1 for a in record.acks.values()),
            "given_up_unacknowledged": len(record.given_up),
            "tasks_in_database": len(tasks),
            "task_outcomes": dict(Counter(r["status"] for r in tasks)),
            "run_outcomes": dict(Counter(r["status"] for r in runs)),
        },
        "faults_injected": dict(Counter(f.kind for f in faults if f.injected)),
        "faults_not_landed": [f.to_json() for f in faults if not f.injected],
        "lost": len(lost),
        "lost_examples": lost[:EXAMPLES],
        "duplicated": len(duplicates),
        "duplicated_examples": duplicates[:EXAMPLES],
        "malformed_event_logs": len(malformed),
        "malformed_examples": malformed[:EXAMPLES],
        "recovery_s": recovery,
        "worst_recovery_s_by_kind": by_kind,
        "worst_task_latency_during_faults_s": _worst_latency(record, task_by_id, faults),
        "client_errors": record.errors_by_kind(),
        "undocumented_client_errors": len(undocumented),
        "undocumented_examples": [
            {"at_s": round(e.at - load_started_at, 2), "type": e.error_type, "code": e.code,
             "message": e.message} for e in undocumented[:EXAMPLES]],
    }


def _recovery(fault: Fault, record: LoadRecord, events: list[asyncpg.Record],
              load_started_at: float) -> dict[str, Any]:
    """From the fault to the next success of what it hit: an agent success after a replica
    kill, a success of a pool the removed worker node hosted after a node's removal, a routed
    task after a router kill, an acknowledgement over HTTP after a Serve kill;
    otherwise (orchestrator, storage, network) both an acknowledged submission and an agent
    success after the fault ended."""
    after = fault.ended_at

    def first_event(kind: str, pools: list[str] | None = None) -> float | None:
        times = [t for e in events if e["kind"] == kind
                 and (not pools or e["agent_type"] in pools)
                 and (t := _ts(e["at"])) is not None and t >= after]
        return min(times) if times else None

    if fault.pools:  # a worker node's removal: the next success of a pool it hosted
        back = first_event(SUCCESS_EVENT, fault.pools)
    elif fault.kind == "agent_replica_kill":
        back = first_event(SUCCESS_EVENT)
    elif fault.kind == "router_kill":
        back = first_event("routed")
    elif fault.kind in SERVE_KINDS:
        back = record.successes_after(after, via="http")
    else:
        acked = record.successes_after(after)
        succeeded = first_event(SUCCESS_EVENT)
        back = None if acked is None or succeeded is None else max(acked, succeeded)
    return {"kind": fault.kind, "at_s": round(fault.started_at - load_started_at, 2),
            "target": fault.target,
            "recovery_s": None if back is None else round(back - fault.started_at, 3)}


def _worst_latency(record: LoadRecord, task_by_id: dict[str, asyncpg.Record],
                   faults: list[Fault]) -> dict[str, Any] | None:
    windows = [(f.started_at, f.ended_at) for f in faults if f.injected]
    worst: dict[str, Any] | None = None
    for ack in record.acks.values():
        row = task_by_id.get(ack.id) if ack.kind == "task" else None
        if row is None:
            continue
        finished = _ts(row["finished_at"])
        if finished is None:
            continue
        if not any(ack.first_try_at <= end and finished >= start for start, end in windows):
            continue
        latency = finished - ack.first_try_at
        if worst is None or latency > worst["seconds"]:
            worst = {"seconds": round(latency, 3), "task_id": ack.id, "status": row["status"]}
    return worst
