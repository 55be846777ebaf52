"""Workflow runs over HTTP: submit a workflow, read and list runs, decide approvals, cancel,
retry from a step, read a run's events (its live stream is in `routes.streams`).

    POST /workflows                              submit: a document and the run's input
    GET  /runs                                   the tenant's runs, newest first
    GET  /runs/{run_id}                          one run with its steps
    POST /runs/{run_id}/steps/{step_id}/approve  a person's decision on an approval step
    POST /runs/{run_id}/steps/{step_id}/reject
    POST /runs/{run_id}/cancel
    POST /runs/{run_id}/retry                    run again from a step
    GET  /runs/{run_id}/events                   the run's events after `after_id`

Guarantees:
- every run is created in the caller's tenant, and every read or action names the caller's
  tenant to the orchestrator: another tenant's run answers exactly like a missing one (404);
  the list is always the caller's tenant's;
- a bad document is refused (400 `invalid_request` naming the step and field) and nothing
  is stored;
- `Idempotency-Key` makes a submission repeatable: the same key in the same tenant gives the
  same run, started once;
- `wait` (0 < wait ≤ `wait_max_s`) bounds a synchronous answer: 200 with the finished run, or
  202 with the run as it stands; without `wait` the answer is 202 at once;
- a decision is made as the caller (`Principal.subject`); decisions, cancels and retries are
  written to the audit log;
- the request's log lines (its access line among them) carry the id of the run it submitted
  or named (`run_id`).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from actors.logs import bind_log_context
from serve_apps.permissions import Principal
from serve_apps.routes.access import API_PREFIX, Caller, audit, authorize, services
from serve_apps.workflow_schemas import (
    DecisionBody, RetryBody, RunDetailOut, RunEventsOut, RunPageOut, WorkflowBody,
)
from storage.errors import InvalidRequest
from storage.workflow_records import Decision, RunDetail, RunStatus
from storage.workflow_store import MAX_PAGE

async def _bind_run(request: Request) -> None:
    """The run a request names goes on its log lines (`run_id`)."""
    run_id = request.path_params.get("run_id")
    if run_id:
        bind_log_context(run_id=run_id)


router = APIRouter(tags=["workflows"], dependencies=[Depends(authorize), Depends(_bind_run)])

RUN_STATUS_PATTERN: Final = "^(" + "|".join(status.value for status in RunStatus) + ")$"
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Cursor = Annotated[str | None, Query(max_length=200)]
Status = Annotated[str | None, Query(pattern=RUN_STATUS_PATTERN)]
DECISION_AUDIT_ACTIONS: Final = {Decision.APPROVE: "workflow_step_approved",
                                 Decision.REJECT: "workflow_step_rejected"}


@router.post("/workflows", status_code=202, summary="Start a run of a workflow",
             response_model=RunDetailOut,
             responses={200: {"model": RunDetailOut,
                              "description": "The run finished within `wait`: as it ended"}})
async def submit_workflow(
        body: WorkflowBody, request: Request, response: Response, caller: Caller,
        idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
        wait: Annotated[float | None, Query(gt=0)] = None) -> dict[str, Any]:
    svc = services(request)
    if wait is not None and wait > svc.config.wait_max_s:
        raise InvalidRequest(f"wait must be at most {svc.config.wait_max_s:g} seconds",
                             {"field": "wait", "limit": svc.config.wait_max_s})
    detail = await svc.port.submit_workflow(
        body.workflow, body.input,
        # a generated key still protects the submission when Ray retries the call across an
        # orchestrator restart
        idempotency_key=idempotency_key or f"auto:{uuid.uuid4().hex}",
        tenant=caller.tenant, wait_s=wait, callback_url=body.callback_url)
    bind_log_context(run_id=detail.run.id)
    if detail.run.status.is_finished:
        response.status_code = 200
    response.headers["Location"] = f"{API_PREFIX}/runs/{detail.run.id}"
    return detail.to_json()


@router.get("/runs", summary="List the tenant's workflow runs, newest first",
            response_model=RunPageOut)
async def list_runs(request: Request, caller: Caller, status: Status = None,
                    limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
    page = await services(request).port.list_runs(
        tenant=caller.tenant, status=status, limit=limit, cursor=cursor)
    return page.to_json()


@router.get("/runs/{run_id}", summary="One workflow run with its steps",
            response_model=RunDetailOut)
async def get_run(run_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    return (await services(request).port.get_run(run_id, tenant=caller.tenant)).to_json()


@router.post("/runs/{run_id}/steps/{step_id}/approve",
             summary="Approve a step awaiting approval", response_model=RunDetailOut)
async def approve_step(run_id: str, step_id: str, body: DecisionBody, request: Request,
                       caller: Caller) -> dict[str, Any]:
    return await _decide(request, caller, run_id, step_id, Decision.APPROVE, body)


@router.post("/runs/{run_id}/steps/{step_id}/reject",
             summary="Reject a step awaiting approval", response_model=RunDetailOut)
async def reject_step(run_id: str, step_id: str, body: DecisionBody, request: Request,
                      caller: Caller) -> dict[str, Any]:
    return await _decide(request, caller, run_id, step_id, Decision.REJECT, body)


@router.post("/runs/{run_id}/cancel", summary="Cancel a run and its waiting and running steps",
             response_model=RunDetailOut)
async def cancel_run(run_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    detail = await services(request).port.cancel_run(run_id, tenant=caller.tenant)
    await audit(request, caller.tenant, caller.subject, "workflow_run_cancelled", target=run_id)
    return detail.to_json()


@router.post("/runs/{run_id}/retry",
             summary="Run a failed or cancelled run again from a step, keeping what succeeded",
             response_model=RunDetailOut)
async def retry_run(run_id: str, body: RetryBody, request: Request,
                    caller: Caller) -> dict[str, Any]:
    detail = await services(request).port.retry_run(run_id, body.from_step,
                                                     tenant=caller.tenant)
    await audit(request, caller.tenant, caller.subject, "workflow_run_retried", target=run_id,
                details={"from_step": body.from_step})
    return detail.to_json()


@router.get("/runs/{run_id}/events", summary="The run's events after `after_id`",
            response_model=RunEventsOut)
async def run_events(run_id: str, request: Request, caller: Caller,
                     after_id: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    events = await services(request).port.run_events(run_id, after_id, tenant=caller.tenant)
    return {"events": [event.to_json() for event in events]}


async def _decide(request: Request, caller: Principal, run_id: str, step_id: str,
                  decision: Decision, body: DecisionBody) -> dict[str, Any]:
    detail: RunDetail = await services(request).port.decide(
        run_id, step_id, decision.value, actor=caller.subject, comment=body.comment,
        tenant=caller.tenant, map_index=body.map_index)
    await audit(request, caller.tenant, caller.subject, DECISION_AUDIT_ACTIONS[decision],
                target=run_id, details={"step_id": step_id, "map_index": body.map_index})
    return detail.to_json()
