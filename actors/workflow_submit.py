"""Submitting the tasks of a plan's ready steps through the orchestrator's admission.

`submit_steps` tries the whole batch at once; when admission refuses it, it goes one step at a
time to find which task is refused for its content (that step then fails, naming why) and to
take what fits in a full queue (the rest stays ready and is tried again soon). It also says
whether a task came back that existed already under its idempotency key: submitted before a
crash, it may have ended, and the run must be planned again at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from actors.errors import PlatformUnavailable, QueueFull
from actors.workflow_advance import Submission
from storage.errors import InvalidRequest
from storage.messages import TaskRequest

log = logging.getLogger("ymera.workflows")

SubmitTasks = Callable[[Sequence[TaskRequest]], Awaitable[tuple[list[str], set[str]]]]
"""Submit tasks: their ids, and the set of those this call created."""

Submitted = dict[tuple[str, int], str | InvalidRequest]


async def submit_steps(submit_tasks: SubmitTasks, submissions: Sequence[Submission]
                       ) -> tuple[Submitted, bool, bool]:
    """For each step (id, item) taken, its task id, or the `InvalidRequest` admission refused
    its task with; whether admission was busy (queue full, draining: the steps not taken are
    left out, try again soon); and whether some task existed already under its key."""
    if not submissions:
        return {}, False, False
    outcomes: list[str | InvalidRequest] = []
    busy = False
    created: set[str] = set()

    async def submit(requests: list[TaskRequest]) -> list[str]:
        ids, new = await submit_tasks(requests)
        created.update(new)
        return ids

    try:
        outcomes.extend(await submit([s.request for s in submissions]))
    except (InvalidRequest, QueueFull):  # find which, or take what fits: one at a time
        for submission in submissions:
            try:
                outcomes.extend(await submit([submission.request]))
            except InvalidRequest as exc:
                outcomes.append(exc)
            except (QueueFull, PlatformUnavailable) as exc:
                log.info("workflow steps wait to be submitted (%s)", exc)
                busy = True
                break
    except PlatformUnavailable as exc:
        log.info("workflow steps wait to be submitted (%s)", exc)
        return {}, True, False
    existed = any(isinstance(outcome, str) and outcome not in created for outcome in outcomes)
    return ({(s.step_id, s.map_index): outcome for s, outcome in zip(submissions, outcomes)},
            busy, existed)
