"""Tasks over HTTP: submit, read, list, cancel, feedback, history, batches, dead letters,
requeue.

Guarantees:
- every task is created in the caller's tenant, and every read or action first fetches the
  task and compares tenants (a history read does both in its one orchestrator call): another
  tenant's task answers exactly like a missing one (404);
  lists and batch counts are always the caller's tenant's (another tenant's batch is a 404);
- `Idempotency-Key` makes a submission repeatable: the same key in the same tenant gives the
  same task id and runs the task once;
- `wait` (0 < wait ≤ `wait_max_s`) bounds a synchronous answer: 200 with the finished task, or
  202 with the task as it stands; without `wait` the answer is 202 at once;
- requeues are written to the audit log;
- the request's log lines (its access line among them) carry the id of the task it submitted
  or acted on, which joins a request id to the task's own log lines;
- a stored payload, route, result or error too deep to show (written before the depth limit
  existed) is shown as a marker (`storage.storable.readable`): it never fails a page.
"""

from __future__ import annotations

import uuid

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from actors.logs import bind_log_context
from serve_apps.permissions import Principal
from serve_apps.routes.access import API_PREFIX, Caller, audit, authorize, services
from serve_apps.schemas import AttemptsOut, FeedbackBody, TaskBody, TaskOut, TaskPageOut
from storage.errors import InvalidRequest, NotFound
from storage.messages import Task, TaskRequest
from storage.storable import readable

router = APIRouter(tags=["tasks"], dependencies=[Depends(authorize)])

Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(max_length=200)]


async def owned_task(request: Request, caller: Principal, task_id: str) -> Task:
    """The task `task_id` if it belongs to the caller's tenant; `NotFound` otherwise."""
    try:
        task = await services(request).port.get(task_id)
    except NotFound:
        task = None
    if task is None or task.tenant != caller.tenant:
        raise NotFound(f"no task with id {task_id!r}", {"task_id": task_id})
    bind_log_context(task_id=task.id, agent_type=task.agent_type)
    return task


@router.post("/tasks", status_code=202, summary="Submit a task", response_model=TaskOut,
             responses={200: {"model": TaskOut,
                              "description": "The task finished within `wait`: as it ended"}})
async def submit_task(
        body: TaskBody, request: Request, response: Response, caller: Caller,
        idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
        wait: Annotated[float | None, Query(gt=0)] = None) -> dict[str, Any]:
    svc = services(request)
    if wait is not None and wait > svc.config.wait_max_s:
        raise InvalidRequest(f"wait must be at most {svc.config.wait_max_s:g} seconds",
                             {"field": "wait", "limit": svc.config.wait_max_s})
    task_request = TaskRequest(
        description=body.description, payload=body.payload, agent_type=body.agent_type,
        priority=body.priority, timeout_s=body.timeout_s, max_attempts=body.max_attempts,
        # A generated key still protects the submission when Ray retries the call across an
        # orchestrator restart (as the Python client does).
        idempotency_key=idempotency_key or f"auto:{uuid.uuid4().hex}", tenant=caller.tenant,
        batch_id=body.batch_id, callback_url=body.callback_url)
    task = await svc.port.accept(task_request, wait)
    bind_log_context(task_id=task.id, agent_type=task.agent_type)
    if task.status.is_terminal:
        response.status_code = 200
    response.headers["Location"] = f"{API_PREFIX}/tasks/{task.id}"
    return task.to_json()


@router.get("/tasks", summary="List the tenant's tasks, newest first",
            response_model=TaskPageOut)
async def list_tasks(request: Request, caller: Caller, status: str | None = None,
                     agent_type: Annotated[str | None, Query(max_length=64)] = None,
                     batch_id: Annotated[str | None, Query(max_length=64)] = None,
                     limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
    page = await services(request).port.list_tasks(
        status=status, agent_type=agent_type, tenant=caller.tenant,
        batch_id=batch_id, limit=limit, cursor=cursor)
    return {"tasks": [t.to_json() for t in page.tasks], "next_cursor": page.next_cursor}


@router.get("/tasks/{task_id}", summary="One task", response_model=TaskOut)
async def get_task(task_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    return (await owned_task(request, caller, task_id)).to_json()


@router.post("/tasks/{task_id}/cancel", summary="Cancel a queued or running task",
             response_model=TaskOut)
async def cancel_task(task_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    await owned_task(request, caller, task_id)
    return (await services(request).port.cancel(task_id)).to_json()


@router.post("/tasks/{task_id}/feedback", summary="Say which agent type should have taken it")
async def task_feedback(task_id: str, body: FeedbackBody, request: Request,
                        caller: Caller) -> dict[str, Any]:
    await owned_task(request, caller, task_id)
    return await services(request).port.feedback(task_id, body.agent_type)


@router.get("/tasks/{task_id}/attempts", summary="The task's attempt history",
            response_model=AttemptsOut)
async def task_attempts(task_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    bind_log_context(task_id=task_id)
    attempts = await services(request).port.attempts(task_id, tenant=caller.tenant)
    return {"attempts": [_attempt_json(a) for a in attempts]}


@router.get("/tasks/{task_id}/events", summary="The task's events after `after_id`")
async def task_events(task_id: str, request: Request, caller: Caller,
                      after_id: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    bind_log_context(task_id=task_id)
    events = await services(request).port.events(task_id, after_id, tenant=caller.tenant)
    return {"events": [{"id": e.id, "task_id": e.task_id, "kind": e.kind,
                        "at": e.at.isoformat(), "attempt": e.attempt,
                        "data": readable(e.data)}
                       for e in events]}


@router.get("/batches/{batch_id}", summary="How a batch's tasks stand: counts by status")
async def batch_status(batch_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    status = await services(request).port.batch_status(batch_id, caller.tenant)
    return status.to_json()


@router.get("/dead", summary="The tenant's dead-lettered tasks", response_model=TaskPageOut)
async def dead_tasks(request: Request, caller: Caller, limit: Limit = 100,
                     cursor: Cursor = None) -> dict[str, Any]:
    page = await services(request).port.list_tasks(
        status="dead", tenant=caller.tenant, limit=limit, cursor=cursor)
    return {"tasks": [t.to_json() for t in page.tasks], "next_cursor": page.next_cursor}


@router.post("/tasks/{task_id}/requeue", summary="Give a dead task a fresh set of attempts",
             response_model=TaskOut)
async def requeue_task(task_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    svc = services(request)
    await owned_task(request, caller, task_id)
    task = await svc.port.requeue(task_id)
    await audit(request, caller.tenant, caller.subject, "task_requeued", target=task_id)
    return task.to_json()


def _attempt_json(attempt: Any) -> dict[str, Any]:
    return {"number": attempt.number, "replica": attempt.replica,
            "outcome": attempt.outcome.value, "started_at": attempt.started_at.isoformat(),
            "finished_at": attempt.finished_at.isoformat() if attempt.finished_at else None,
            "duration_s": attempt.duration_s, "cpu_s": attempt.cpu_s,
            "error": attempt.error.to_json() if attempt.error else None}
