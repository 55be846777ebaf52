"""The durable record of workflow runs and their steps, from which the engine advances runs.

Guarantees:
- A run is stored with its initial steps in one transaction; its spec never changes afterwards.
  Creating again with the same (tenant, idempotency key) returns the stored run and writes
  nothing, also when two creates race (the unique index decides, the loser reads the winner).
- Every read a caller makes names its tenant: another tenant's run is `NotFound`, exactly like
  a run that does not exist.
- A finished run (succeeded, failed, cancelled) never changes status again.
- Step changes are compare-and-set on the step's previous status, applied together in one
  transaction; a step that succeeded is never changed again.
- An approval is recorded once, only on a step awaiting one.
- Every change is written with its event (`run_events`), in the same transaction: the event log
  of a run is exactly its history, and a stream resumes from an event id without a gap.
- A retry (`reopen`) is the one way back from a finished run: the run becomes running again in
  its next generation, the chosen steps wait again, and the rest is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.cursor import decode_cursor, encode_cursor
from storage.database import EngineStore
from storage.errors import Conflict, InvalidRequest, NotFound
from storage.messages import new_task_id, utcnow
from storage.models import tasks_table
from storage.models import workflow_events_table as events_table
from storage.models import workflow_runs_table as runs
from storage.models import workflow_steps_table as steps_table
from storage.workflow_records import (
    FINISHED_RUN_VALUES, UNCHANGED, UNFINISHED_RUN_VALUES, UNMAPPED, Decision, NewStep,
    RunEvent, RunStatus, StepChange, StepStatus, WorkflowRun, WorkflowStep, event_from_row,
    run_from_row, step_from_row,
)
from storage.webhook_outbox import enqueue_run_events, run_finished, steps_awaiting_approval
from storage.webhook_records import check_webhook_url
from storage.workflow_writes import (
    RUN_SOURCES, apply_changes, as_enum, check_json, check_steps, check_text_field, event_row,
    runs_a_task, step_event, step_rows,
)

__all__ = ["Decision", "NewStep", "RunStatus", "StepChange", "StepStatus", "UNMAPPED",
           "WorkflowRun", "WorkflowStep", "WorkflowStore"]

MAX_PAGE = 1000


class WorkflowStore(EngineStore):
    """Async access to workflow runs and their steps over one engine."""

    async def create_run(
        self, tenant: str, name: str, version: str, spec: dict[str, Any], input: Any,
        idempotency_key: str | None = None, steps: Sequence[NewStep] = (),
        deadline_at: datetime | None = None, callback_url: str | None = None,
    ) -> tuple[WorkflowRun, bool]:
        """Store a new pending run with its initial `steps` in one transaction and return it
        with True; or, when `tenant` already has a run with `idempotency_key`, that run with
        False (nothing is written)."""
        for field, value in (("tenant", tenant), ("name", name), ("version", version)):
            check_text_field(field, value)
        check_text_field("idempotency_key", idempotency_key, optional=True)
        if not isinstance(spec, dict):
            raise InvalidRequest("workflow spec must be a JSON object", {"field": "spec"})
        check_json("spec", spec)
        check_json("input", input)
        check_steps(steps)
        if callback_url is not None:
            callback_url = check_webhook_url(callback_url, "callback_url")
        if idempotency_key is not None:
            existing = await self._run_by_key(tenant, idempotency_key)
            if existing is not None:
                return existing, False
        now = utcnow()
        row = {"id": new_task_id(), "tenant": tenant, "name": name, "version": version,
               "spec": spec, "input": input, "status": RunStatus.PENDING.value,
               "idempotency_key": idempotency_key, "error": None, "created_at": now,
               "updated_at": now, "finished_at": None, "deadline_at": deadline_at,
               "callback_url": callback_url}
        taken = Conflict(f"idempotency key {idempotency_key!r} is taken",
                         {"idempotency_key": idempotency_key})
        try:
            async with self._transaction(f"creating a {name!r} run", taken) as connection:
                await connection.execute(insert(runs), row)
                await connection.execute(insert(events_table), event_row(
                    row["id"], "run_created", now,
                    data={"name": name, "version": version}))
                if steps:
                    await connection.execute(insert(steps_table), step_rows(row["id"], steps, now))
        except Conflict:
            existing = (await self._run_by_key(tenant, idempotency_key)
                        if idempotency_key is not None else None)
            if existing is None:
                raise
            return existing, False
        return run_from_row(SimpleNamespace(**row)), True

    async def _run_by_key(self, tenant: str, key: str) -> WorkflowRun | None:
        rows = await self._fetch(
            select(runs).where(runs.c.tenant == tenant, runs.c.idempotency_key == key))
        return run_from_row(rows[0]) if rows else None

    async def run(self, tenant: str, run_id: str) -> WorkflowRun:
        """`tenant`'s run `run_id`; `NotFound` when `tenant` has none by that id."""
        rows = await self._fetch(select(runs).where(runs.c.id == run_id, runs.c.tenant == tenant))
        if not rows:
            raise NotFound(f"no workflow run with id {run_id!r}", {"run_id": run_id})
        return run_from_row(rows[0])

    async def list_runs(
        self, tenant: str, status: RunStatus | str | None = None, limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[WorkflowRun], str | None]:
        """`tenant`'s runs, newest first, `limit` at a time, and the cursor of the next page
        (None on the last)."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}, not {limit}",
                                 {"field": "limit"})
        query = select(runs).where(runs.c.tenant == tenant)
        if status is not None:
            query = query.where(runs.c.status == as_enum(RunStatus, "status", status).value)
        if cursor:
            created, run_id = decode_cursor(cursor, "this run listing")
            query = query.where(or_(runs.c.created_at < created,
                                    and_(runs.c.created_at == created, runs.c.id < run_id)))
        query = query.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit + 1)
        page = [run_from_row(row) for row in await self._fetch(query)]
        last = page[limit - 1] if len(page) > limit else None
        return page[:limit], encode_cursor(last.created_at, last.id) if last else None

    async def steps(self, tenant: str, run_id: str) -> list[WorkflowStep]:
        """The steps of `tenant`'s run `run_id`, by step id then item; `NotFound` as `run`."""
        owner, rows = await self._fetch_all(
            select(runs.c.id).where(runs.c.id == run_id, runs.c.tenant == tenant),
            select(steps_table).where(steps_table.c.run_id == run_id)
            .order_by(steps_table.c.step_id, steps_table.c.map_index))
        if not owner:
            raise NotFound(f"no workflow run with id {run_id!r}", {"run_id": run_id})
        return [step_from_row(row) for row in rows]

    async def set_run_status(
        self, tenant: str, run_id: str, status: RunStatus | str, error: Any = None,
    ) -> WorkflowRun:
        """Move the run to `status` (with `error` when it failed) and return it. Setting the
        status it has changes nothing; a transition not allowed (any from a finished run) is
        `Conflict`."""
        target = as_enum(RunStatus, "status", status)
        check_json("error", error)
        now = utcnow()
        values: dict[str, Any] = {"status": target.value, "updated_at": now}
        if target.is_finished:
            values.update(finished_at=now, error=error)
        sources = [s.value for s in RUN_SOURCES[target]]
        async with self._transaction(f"setting run {run_id!r} to {target.value}") as connection:
            result = await connection.execute(
                update(runs).where(runs.c.id == run_id, runs.c.tenant == tenant,
                                   runs.c.status.in_(sources)).values(**values))
            if result.rowcount:
                await connection.execute(insert(events_table), event_row(
                    run_id, f"run_{target.value}", now,
                    data={"error": error} if error is not None else None))
                if target.is_finished:
                    await enqueue_run_events(connection, run_id,
                                             [run_finished(target.value, error, now)], now)
        current = await self.run(tenant, run_id)
        if result.rowcount == 0 and current.status != target:
            raise Conflict(f"workflow run {run_id!r} is {current.status.value}; it cannot "
                           f"become {target.value}",
                           {"run_id": run_id, "status": current.status.value})
        return current

    async def update_steps(
        self, run_id: str, changes: Sequence[StepChange], new_steps: Sequence[NewStep] = (),
    ) -> list[StepChange]:
        """Add `new_steps` (fan-out items; ones that exist already are left as they are), then
        apply `changes` to the run's steps in order, all in one transaction. A change applies
        only when its step is in its `expected` status (after the changes before it); the
        changes that applied are returned. Changing a succeeded step is refused
        (`InvalidRequest`, nothing applied)."""
        return (await self.apply_plan(run_id, changes, new_steps))[0]

    async def apply_plan(
        self, run_id: str, changes: Sequence[StepChange], new_steps: Sequence[NewStep] = (),
        run_status: RunStatus | None = None, error: Any = None,
    ) -> tuple[list[StepChange], bool]:
        """`update_steps`, and in the same transaction move the run to `run_status` (with
        `error` when it finishes) when that transition is allowed: the run's status and its
        steps are never seen apart. Returns the changes that applied and whether the run's
        status changed."""
        if run_status is not None:
            run_status = as_enum(RunStatus, "status", run_status)
            check_json("error", error)
        check_steps(new_steps)
        for change in changes:
            check_text_field("step_id", change.step_id)
            for field in ("expected", "status"):
                as_enum(StepStatus, f"step {field}", getattr(change, field))
            if StepStatus(change.expected) is StepStatus.SUCCEEDED:
                raise InvalidRequest(f"step {change.step_id!r} succeeded; it never changes",
                                     {"field": "expected", "step": change.step_id})
            if change.task_id is not UNCHANGED:
                check_text_field("task_id", change.task_id, optional=True)
            for field in ("output", "error"):
                if getattr(change, field) is not UNCHANGED:
                    check_json(field, getattr(change, field))
        now = utcnow()
        applied: list[StepChange] = []
        run_changed = False
        async with self._transaction(f"updating the steps of run {run_id!r}") as connection:
            # a write first: it locks the run (and, on SQLite, the database) for the reads below
            if run_status is not None:
                values: dict[str, Any] = {"status": run_status.value, "updated_at": now}
                if run_status.is_finished:
                    values.update(finished_at=now, error=error)
                sources = [s.value for s in RUN_SOURCES[run_status]]
                run_changed = bool((await connection.execute(
                    update(runs).where(runs.c.id == run_id, runs.c.status.in_(sources))
                    .values(**values))).rowcount)
            if not run_changed:
                await connection.execute(update(runs).where(runs.c.id == run_id)
                                         .values(updated_at=now))
            if new_steps:
                await connection.execute(self._insert_new_steps(),
                                         step_rows(run_id, new_steps, now))
            if changes:
                current = {(row.step_id, row.map_index): row.status
                           for row in (await connection.execute(
                               select(steps_table.c.step_id, steps_table.c.map_index,
                                      steps_table.c.status)
                               .where(steps_table.c.run_id == run_id))).all()}
                for change in changes:
                    key = (change.step_id, change.map_index)
                    if current.get(key) == StepStatus(change.expected).value:
                        current[key] = StepStatus(change.status).value
                        applied.append(change)
                await apply_changes(connection, run_id, applied, now)
                if applied:
                    await connection.execute(
                        insert(events_table),
                        [step_event(run_id, change, now) for change in applied])
            notes = steps_awaiting_approval(applied)
            if run_changed:
                assert run_status is not None
                await connection.execute(insert(events_table), event_row(
                    run_id, f"run_{run_status.value}", now,
                    data={"error": error} if error is not None and run_status.is_finished
                    else None))
                if run_status.is_finished:
                    notes.append(run_finished(run_status.value, error, now))
            await enqueue_run_events(connection, run_id, notes, now)
        return applied, run_changed

    def _insert_new_steps(self) -> Any:
        """An insert of step rows that leaves the rows already there as they are."""
        if self.engine.dialect.name == "postgresql":
            return postgresql_insert(steps_table).on_conflict_do_nothing()
        return sqlite_insert(steps_table).on_conflict_do_nothing()

    async def record_approval(
        self, tenant: str, run_id: str, step_id: str, decision: Decision | str, actor: str,
        comment: str | None = None, map_index: int = UNMAPPED,
    ) -> WorkflowStep:
        """Record a person's decision on a step awaiting approval: approved, a pure approval
        step succeeds and a step that also runs a task becomes ready to run it; rejected, it
        fails. `Conflict` when the step is not awaiting one (decided already included) or the
        run finished; `NotFound` when `tenant` has no such run or step."""
        verdict = as_enum(Decision, "decision", decision)
        check_text_field("actor", actor)
        if comment is not None and not isinstance(comment, str):
            raise InvalidRequest("approval comment must be a string", {"field": "comment"})
        now = utcnow()
        outcome = {"decision": verdict.value, "actor": actor, "comment": comment,
                   "decided_at": now.isoformat()}
        open_run = select(runs.c.id).where(runs.c.id == run_id, runs.c.tenant == tenant,
                                           runs.c.status.in_(UNFINISHED_RUN_VALUES))
        key = (steps_table.c.run_id == run_id, steps_table.c.step_id == step_id,
               steps_table.c.map_index == map_index)
        async with self._transaction(f"recording a decision on {step_id!r}") as connection:
            spec = (await connection.execute(
                select(runs.c.spec).where(runs.c.id == run_id, runs.c.tenant == tenant))).scalar()
            # approved, a step that also runs a task becomes ready for it; a pure approval succeeds
            status = (StepStatus.FAILED if verdict is Decision.REJECT
                      else StepStatus.READY if runs_a_task(spec, step_id)
                      else StepStatus.SUCCEEDED)
            result = await connection.execute(update(steps_table).where(
                *key, steps_table.c.run_id.in_(open_run),
                steps_table.c.status == StepStatus.AWAITING_APPROVAL.value,
                steps_table.c.decision.is_(None),
            ).values(status=status.value, decision=verdict.value, decided_by=actor,
                     decided_at=now, decision_comment=comment, wake_at=None, updated_at=now,
                     output=outcome if status is StepStatus.SUCCEEDED else None,
                     error=None if verdict is Decision.APPROVE else outcome))
            if result.rowcount:
                kind = "step_approved" if verdict is Decision.APPROVE else "step_rejected"
                await connection.execute(insert(events_table), event_row(
                    run_id, kind, now, step_id, map_index,
                    {"actor": actor, "comment": comment, "status": status.value}))
        run = await self.run(tenant, run_id)
        matching = [s for s in await self.steps(tenant, run_id)
                    if (s.step_id, s.map_index) == (step_id, map_index)]
        if not matching:
            raise NotFound(f"workflow run {run_id!r} has no step {step_id!r}",
                           {"run_id": run_id, "step_id": step_id})
        if result.rowcount == 0:
            why = (f"the run is {run.status.value}" if run.status.is_finished
                   else f"it is {matching[0].status.value}")
            raise Conflict(f"step {step_id!r} is not awaiting approval: {why}",
                           {"run_id": run_id, "step_id": step_id})
        return matching[0]

    async def stop_run(self, tenant: str, run_id: str, status: RunStatus | str,
                       error: Any = None) -> tuple[WorkflowRun, list[str]]:
        """Finish an unfinished run as `status` (cancelled, or failed past its deadline) and
        cancel its unfinished steps, with their events, in one transaction. Returns the run
        and the tasks of the steps that were ready or running (to cancel). `Conflict` when the
        run already finished."""
        target = as_enum(RunStatus, "status", status)
        if not target.is_finished:
            raise InvalidRequest(f"a run is stopped as a finished status, not {target.value}",
                                 {"field": "status"})
        check_json("error", error)
        now = utcnow()
        unfinished = [s.value for s in (StepStatus.WAITING, StepStatus.READY, StepStatus.RUNNING,
                                        StepStatus.AWAITING_APPROVAL, StepStatus.TIMER)]
        tasks: list[str] = []
        async with self._transaction(f"stopping run {run_id!r}") as connection:
            result = await connection.execute(
                update(runs).where(runs.c.id == run_id, runs.c.tenant == tenant,
                                   runs.c.status.in_(UNFINISHED_RUN_VALUES))
                .values(status=target.value, error=error, finished_at=now, updated_at=now))
            if result.rowcount:
                rows = (await connection.execute(
                    select(steps_table.c.step_id, steps_table.c.map_index, steps_table.c.status,
                           steps_table.c.task_id)
                    .where(steps_table.c.run_id == run_id,
                           steps_table.c.status.in_(unfinished)))).all()
                tasks = [row.task_id for row in rows if row.task_id is not None and row.status
                         in (StepStatus.READY.value, StepStatus.RUNNING.value)]
                await connection.execute(
                    update(steps_table).where(steps_table.c.run_id == run_id,
                                              steps_table.c.status.in_(unfinished))
                    .values(status=StepStatus.CANCELLED.value, updated_at=now))
                events = [event_row(run_id, "step_cancelled", now, row.step_id, row.map_index)
                          for row in rows]
                events.append(event_row(run_id, f"run_{target.value}", now,
                                         data={"error": error} if error is not None else None))
                await connection.execute(insert(events_table), events)
                await enqueue_run_events(connection, run_id,
                                         [run_finished(target.value, error, now)], now)
        current = await self.run(tenant, run_id)
        if result.rowcount == 0:
            raise Conflict(f"workflow run {run_id!r} is already {current.status.value}",
                           {"run_id": run_id, "status": current.status.value})
        return current, tasks

    async def stopped_step_tasks(self, limit: int = 1000) -> list[str]:
        """Tasks still queued or running although their step was cancelled (a stop whose task
        cancels did not happen, because the process died right after it): at most `limit`."""
        query = (select(steps_table.c.task_id)
                 .join(tasks_table, tasks_table.c.id == steps_table.c.task_id)
                 .where(steps_table.c.status == StepStatus.CANCELLED.value,
                        tasks_table.c.status.in_(("queued", "running")))
                 .limit(limit))
        return [row.task_id for row in await self._fetch(query)]

    async def run_events(self, tenant: str, run_id: str, after_id: int = 0,
                         limit: int = 1000) -> list[RunEvent]:
        """The events of `tenant`'s run `run_id` after `after_id`, oldest first, at most
        `limit`; `NotFound` as `run`."""
        if not 1 <= limit <= 10_000:
            raise InvalidRequest(f"limit must be between 1 and 10000, not {limit}",
                                 {"field": "limit"})
        owner, rows = await self._fetch_all(
            select(runs.c.id).where(runs.c.id == run_id, runs.c.tenant == tenant),
            select(events_table).where(events_table.c.run_id == run_id,
                                       events_table.c.id > after_id)
            .order_by(events_table.c.id).limit(limit))
        if not owner:
            raise NotFound(f"no workflow run with id {run_id!r}", {"run_id": run_id})
        return [event_from_row(row) for row in rows]

    async def reopen(self, tenant: str, run_id: str, step_ids: Sequence[str],
                     data: Any = None) -> WorkflowRun:
        """Retry a failed or cancelled run: in one transaction it becomes running in its next
        generation, each of `step_ids` waits again (output, error, task and decision cleared,
        its fan-out items removed), and a `run_retried` event records `data`. Steps not named
        keep their rows. `Conflict` unless the run failed or was cancelled."""
        for step_id in step_ids:
            check_text_field("step_id", step_id)
        check_json("data", data)
        now = utcnow()
        retryable = (RunStatus.FAILED.value, RunStatus.CANCELLED.value)
        async with self._transaction(f"retrying run {run_id!r}") as connection:
            result = await connection.execute(
                update(runs).where(runs.c.id == run_id, runs.c.tenant == tenant,
                                   runs.c.status.in_(retryable))
                .values(status=RunStatus.RUNNING.value, generation=runs.c.generation + 1,
                        error=None, finished_at=None, updated_at=now))
            if result.rowcount:
                chosen = steps_table.c.step_id.in_(list(step_ids))
                await connection.execute(delete(steps_table).where(
                    steps_table.c.run_id == run_id, chosen, steps_table.c.map_index != UNMAPPED))
                await connection.execute(update(steps_table).where(
                    steps_table.c.run_id == run_id, chosen).values(
                    status=StepStatus.WAITING.value, task_id=None, output=None, error=None,
                    decision=None, decided_by=None, decided_at=None, decision_comment=None,
                    wake_at=None, updated_at=now))
                await connection.execute(insert(events_table),
                                         event_row(run_id, "run_retried", now, data=data))
        current = await self.run(tenant, run_id)
        if result.rowcount == 0:
            raise Conflict(f"workflow run {run_id!r} is {current.status.value}; only a failed "
                           "or cancelled run can be retried",
                           {"run_id": run_id, "status": current.status.value})
        return current

    async def gauges(self, now: datetime) -> dict[str, Any]:
        """Unfinished runs by status, those with a step awaiting approval, and those past
        their deadline (every tenant)."""
        from sqlalchemy import func

        unfinished = runs.c.status.in_(UNFINISHED_RUN_VALUES)
        by_status, awaiting, overdue = await self._fetch_all(
            select(runs.c.status, func.count()).where(unfinished).group_by(runs.c.status),
            select(func.count(func.distinct(steps_table.c.run_id)))
            .join(runs, runs.c.id == steps_table.c.run_id)
            .where(unfinished, steps_table.c.status == StepStatus.AWAITING_APPROVAL.value),
            select(func.count()).where(unfinished, runs.c.deadline_at < now))
        return {"by_status": {row[0]: row[1] for row in by_status},
                "awaiting_approval": awaiting[0][0], "overdue": overdue[0][0]}

    async def due_steps(self, now: datetime, limit: int = 100) -> list[tuple[str, WorkflowStep]]:
        """Timers and approval timeouts due at `now` in unfinished runs of every tenant, as
        (tenant, step), earliest first."""
        query = (select(runs.c.tenant, steps_table)
                 .join(runs, runs.c.id == steps_table.c.run_id)
                 .where(steps_table.c.wake_at <= now,
                        steps_table.c.status.in_([StepStatus.TIMER.value,
                                                  StepStatus.AWAITING_APPROVAL.value]),
                        runs.c.status.in_(UNFINISHED_RUN_VALUES))
                 .order_by(steps_table.c.wake_at).limit(limit))
        return [(row.tenant, step_from_row(row)) for row in await self._fetch(query)]

    async def runs_to_advance(self, limit: int = 100, cursor: str | None = None
                              ) -> tuple[list[WorkflowRun], str | None]:
        """Unfinished runs of every tenant, oldest first, `limit` at a time, and the cursor
        of the next page (None on the last)."""
        query = select(runs).where(runs.c.status.in_(UNFINISHED_RUN_VALUES))
        if cursor:
            created, run_id = decode_cursor(cursor, "this run listing")
            query = query.where(or_(runs.c.created_at > created,
                                    and_(runs.c.created_at == created, runs.c.id > run_id)))
        query = query.order_by(runs.c.created_at, runs.c.id).limit(limit + 1)
        page = [run_from_row(row) for row in await self._fetch(query)]
        last = page[limit - 1] if len(page) > limit else None
        return page[:limit], encode_cursor(last.created_at, last.id) if last else None

    async def purge_finished(self, older_than: datetime, batch_size: int = 500) -> int:
        """Delete the runs that finished before `older_than`, with their steps, at most
        `batch_size` runs per transaction; return how many runs went. Unfinished runs stay."""
        if batch_size < 1:
            raise InvalidRequest(f"batch_size must be at least 1, not {batch_size}",
                                 {"field": "batch_size"})
        purged = 0
        # The batch is chosen inside the first write, so SQLite takes its write lock before
        # reading (a read first could not be upgraded once another writer committed).
        batch = (select(runs.c.id).where(runs.c.status.in_(FINISHED_RUN_VALUES),
                                         runs.c.finished_at < older_than)
                 .order_by(runs.c.finished_at, runs.c.id).limit(batch_size))
        while True:
            async with self._transaction("purging finished workflow runs") as connection:
                await connection.execute(delete(steps_table)
                                         .where(steps_table.c.run_id.in_(batch)))
                await connection.execute(delete(events_table)
                                         .where(events_table.c.run_id.in_(batch)))
                deleted = (await connection.execute(
                    delete(runs).where(runs.c.id.in_(batch)))).rowcount
            purged += deleted
            if deleted < batch_size:
                return purged
