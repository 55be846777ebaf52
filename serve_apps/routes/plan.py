"""The planner over HTTP: a request in words turned into a workflow for review.

    POST /plan    {"request": str, "run": bool, "input": any, "model": str | null}

Guarantees:
- the caller needs `workflows:plan`; `run: true` also needs `workflows:submit`, checked before
  the model is asked (a refused caller spends no tokens);
- the model is asked as the caller's tenant (its token budget pays), and a started run is the
  caller's tenant's;
- nothing runs unless `run` is true: 200 with the plan; with `run`, 202 with the plan and the
  started run's id (`Location` names the run), like `POST /workflows`;
- with no model configured the answer is 422 `no_model_configured` whose message says how to
  configure one: a well-formed request this platform cannot act on (`http_errors`' meaning of
  422). Not a 5xx: retrying will not help until an operator adds a model (a 503 would invite
  retries), and a caller must not be able to raise the server-error rate; a plan the model
  could not get right after its attempts is 422 `plan_refused` with each attempt's problem in
  `details.attempts`;
- the request's log lines carry the id of the run it started (`run_id`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from actors.logs import bind_log_context
from serve_apps.plan_schemas import PlanBody, PlanOut
from serve_apps.routes.access import API_PREFIX, Caller, authorize, services

router = APIRouter(tags=["workflows"], dependencies=[Depends(authorize)])


@router.post("/plan", summary="Turn a request into a workflow with the language model",
             response_model=PlanOut,
             responses={202: {"model": PlanOut, "description": "Planned and started (`run`)"}})
async def plan(body: PlanBody, request: Request, response: Response,
               caller: Caller) -> dict[str, Any]:
    if body.run:
        caller.require("workflows:submit")
    answer = await services(request).port.plan(caller.tenant, body.request, run=body.run,
                                               input=body.input, group=body.model)
    if answer.get("run_id"):
        bind_log_context(run_id=answer["run_id"])
        response.status_code = 202
        response.headers["Location"] = f"{API_PREFIX}/runs/{answer['run_id']}"
    return answer
