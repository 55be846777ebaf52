"""The orchestrator's public operations as one typed interface, and the one place Ray's errors
become the platform's.

    api: OrchestratorApi = orchestrator                 # in process (tests, embedding)
    api: OrchestratorApi = ActorOrchestrator(handle)    # over Ray: the detached actor's handle
    task = await api.get(task_id)

`OrchestratorApi` is what the HTTP API and the Python client may ask of the orchestrator;
`actors.orchestrator.Orchestrator` implements it in process and `ActorOrchestrator` over a Ray
actor handle (the blocking `cluster.client.Client` mirrors it). No caller names an operation
by a string.

Guarantees:
- whatever the path (in process, awaited over Ray, or `ray.get` in a blocking driver), a platform
  error (`storage.errors.YmeraError`) raised by the orchestrator reaches the caller as itself;
- over Ray, `ray_errors_translated` is the only translation: the task error wrapping a platform
  error is removed; an orchestrator that is dead, restarting, unreachable or did not answer in
  time is `PlatformUnavailable` (retryable); any other failure of the call is re-raised as
  its cause's type;
- the orchestrator itself reports storage outages as `PlatformUnavailable` (see
  `actors.errors.storage_trouble_unavailable`), so every client sees one retryable error.

Ray is imported only when a Ray path is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol

from actors.accept_coalescer import AcceptCoalescer
from actors.errors import PlatformUnavailable
from storage.errors import YmeraError
from storage.messages import (
    Attempt, BatchStatus, InboxMessage, RouteDecision, Task, TaskEvent, TaskRequest,
)
from storage.task_store import TaskPage
from storage.workflow_records import RunDetail, RunEvent, RunPage


class OrchestratorApi(Protocol):
    """The orchestrator's public operations (see `actors.orchestrator.Orchestrator` for what
    each guarantees)."""

    async def accept(self, request: TaskRequest | dict, wait_s: float | None = None) -> Task: ...

    async def accept_each(self, requests: Sequence[TaskRequest | dict]
                          ) -> list[Task | YmeraError]: ...

    async def submit_many(self, requests: Sequence[TaskRequest | dict]) -> list[str]: ...

    async def get(self, task_id: str) -> Task: ...

    async def wait(self, task_id: str, timeout_s: float | None = None) -> Task: ...

    async def wait_many(self, task_ids: list[str],
                        timeout_s: float | None = None) -> list[Task]: ...

    async def cancel(self, task_id: str) -> Task: ...

    async def requeue(self, task_id: str) -> Task: ...

    async def list_tasks(self, *, status: str | None = None, agent_type: str | None = None,
                         tenant: str | None = None, batch_id: str | None = None,
                         limit: int = 50, cursor: str | None = None) -> TaskPage: ...

    async def dead_letters(self, limit: int = 100, cursor: str | None = None) -> TaskPage: ...

    async def attempts(self, task_id: str, tenant: str | None = None) -> list[Attempt]: ...

    async def events(self, task_id: str, after_id: int = 0,
                     tenant: str | None = None) -> list[TaskEvent]: ...

    async def tenant_events(self, tenant: str, after_id: int = 0) -> list[TaskEvent]: ...

    async def task_output(self, task_id: str, attempt: int, kind: str,
                          data: dict[str, Any]) -> bool: ...

    async def last_event_id(self) -> int: ...

    async def batch_status(self, batch_id: str, tenant: str = "default") -> BatchStatus: ...

    async def status(self) -> dict[str, Any]: ...

    async def agent_stats(self, window_s: float = 3600.0,
                          tenant: str | None = None) -> dict[str, dict[str, Any]]: ...

    async def inbox(self, agent_type: str, include_acked: bool = False, limit: int = 50,
                    cursor: str | None = None, tenant: str = "default") -> dict[str, Any]: ...

    async def ack_message(self, message_id: str, tenant: str = "default") -> Any: ...

    async def scale(self, agent_type: str, replicas: int | None = None, *,
                    min_replicas: int | None = None, max_replicas: int | None = None,
                    reset: bool = False) -> dict[str, Any]: ...

    async def feedback(self, task_id: str, agent_type: str) -> dict[str, Any]: ...

    async def route(self, description: str, tenant: str = "default") -> RouteDecision: ...

    async def router_state(self, tenant: str = "default") -> dict[str, Any]: ...

    async def ready(self) -> bool: ...

    async def drain(self, timeout_s: float = 60.0) -> dict[str, int]: ...

    async def stop_pools(self) -> int: ...

    # ------------------------------------------------------------- workflows (issue 16)

    async def submit_workflow(self, document: dict[str, Any] | str, input: Any = None, *,
                              idempotency_key: str | None = None, tenant: str = "default",
                              wait_s: float | None = None,
                              callback_url: str | None = None) -> RunDetail: ...

    async def get_run(self, run_id: str, tenant: str = "default") -> RunDetail: ...

    async def wait_run(self, run_id: str, timeout_s: float | None = None,
                       tenant: str = "default") -> RunDetail: ...

    async def list_runs(self, tenant: str = "default", status: str | None = None,
                        limit: int = 50, cursor: str | None = None) -> RunPage: ...

    async def decide(self, run_id: str, step_id: str, decision: str, actor: str,
                     comment: str | None = None, tenant: str = "default",
                     map_index: int = -1) -> RunDetail: ...

    async def cancel_run(self, run_id: str, tenant: str = "default") -> RunDetail: ...

    async def retry_run(self, run_id: str, from_step: str,
                        tenant: str = "default") -> RunDetail: ...

    async def run_events(self, run_id: str, after_id: int = 0,
                         tenant: str = "default") -> list[RunEvent]: ...

    async def purge_runs(self, older_than_s: float | None = None,
                         batch_size: int = 500) -> int: ...

    # ------------------------------------------------------------- the planner (issue 17)

    async def plan(self, tenant: str, request: str, *, run: bool = False, input: Any = None,
                   group: str | None = None) -> dict[str, Any]: ...

    # ------------------------------------------------------------- the model gateway

    async def llm_status(self) -> dict[str, Any]: ...

    async def llm_usage(self, tenant: str) -> dict[str, Any]: ...

    async def set_llm_budget(self, tenant: str, limit_tokens: int | None,
                             period: str | None = None) -> dict[str, Any]: ...

    # ------------------------------------------------------------- events out (issue 19)

    async def create_webhook(self, tenant: str, url: str, events: list[str] | tuple[str, ...],
                             *, agent_type: str | None = None, workflow: str | None = None,
                             description: str | None = None, created_by: str | None = None,
                             enabled: bool = True) -> dict[str, Any]: ...

    async def list_webhooks(self, tenant: str) -> dict[str, Any]: ...

    async def get_webhook(self, tenant: str, subscription_id: str) -> dict[str, Any]: ...

    async def update_webhook(self, tenant: str, subscription_id: str,
                             **changes: Any) -> dict[str, Any]: ...

    async def delete_webhook(self, tenant: str, subscription_id: str) -> dict[str, Any]: ...

    async def rotate_webhook_secret(self, tenant: str, subscription_id: str,
                                    overlap_s: float = 86400.0) -> dict[str, Any]: ...

    async def webhook_deliveries(self, tenant: str, *, subscription_id: str | None = None,
                                 status: str | None = None, task_id: str | None = None,
                                 event_kind: str | None = None, limit: int = 50,
                                 cursor: str | None = None) -> dict[str, Any]: ...

    async def webhook_delivery(self, tenant: str, delivery_id: str) -> dict[str, Any]: ...

    async def redeliver_webhook(self, tenant: str, delivery_id: str) -> dict[str, Any]: ...

    async def callback_secret(self, tenant: str, rotate: bool = False,
                              overlap_s: float = 86400.0) -> dict[str, Any]: ...

    async def post_message(self, tenant: str, agent_type: str, body: Any, *,
                           sender: str | None = None,
                           subject: str | None = None) -> InboxMessage: ...

    async def ack_inbox_message(self, tenant: str, agent_type: str,
                                message_id: str) -> InboxMessage: ...


@contextlib.contextmanager
def ray_errors_translated(what: str = "the orchestrator") -> Iterator[None]:
    """Translate the Ray errors of a call to `what` made (or awaited) in this block: a platform
    error wrapped in `RayTaskError` is raised as itself; a dead, restarting or unreachable actor,
    or a `ray.get` timeout, is `PlatformUnavailable`; any other task error is raised as an
    instance of its cause's type. Works around `ray.get(ref)` and `await ref` alike."""
    import ray.exceptions

    try:
        yield
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, YmeraError):
            raise cause from None
        raise exc.as_instanceof_cause() from None
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
        # ActorDiedError and ActorUnavailableError are RayActorErrors
        raise PlatformUnavailable(
            f"{what} is not answering ({type(exc).__name__}); try again shortly") from exc


class ActorOrchestrator:
    """`OrchestratorApi` over the orchestrator actor's Ray handle, awaited on the caller's
    event loop. Give it the `handle`, or `find`, an async function that looks the handle up:
    then it is found on first use and again after a call finds the orchestrator unavailable,
    so a stale handle is never kept."""

    def __init__(self, handle: Any = None,
                 find: Callable[[], Awaitable[Any]] | None = None) -> None:
        if handle is None and find is None:
            raise ValueError("give the orchestrator's handle, or how to find it")
        self.handle = handle
        self._find = find
        self.coalescer = AcceptCoalescer(self.accept_each)

    async def _call(self, invoke: Callable[[Any], Any]) -> Any:
        """Await `invoke(handle)` (an ObjectRef of one typed method call), errors translated."""
        handle = self.handle
        if handle is None:
            assert self._find is not None
            handle = self.handle = await self._find()
        try:
            with ray_errors_translated():
                return await invoke(handle)
        except PlatformUnavailable:
            if self._find is not None:
                self.handle = None
            raise

    async def accept(self, request: TaskRequest | dict, wait_s: float | None = None) -> Task:
        """With `wait_s`, one call of its own; without, submissions made at the same time leave
        together in one `accept_each` call (`actors.accept_coalescer`)."""
        if wait_s is not None:
            return await self._call(lambda h: h.accept.remote(request, wait_s))
        return await self.coalescer.accept(request)

    async def accept_each(self, requests: Sequence[TaskRequest | dict]
                          ) -> list[Task | YmeraError]:
        return await self._call(lambda h: h.accept_each.remote(list(requests)))

    async def submit_many(self, requests: Sequence[TaskRequest | dict]) -> list[str]:
        return await self._call(lambda h: h.submit_many.remote(requests))

    async def get(self, task_id: str) -> Task:
        return await self._call(lambda h: h.get.remote(task_id))

    async def wait(self, task_id: str, timeout_s: float | None = None) -> Task:
        return await self._call(lambda h: h.wait.remote(task_id, timeout_s))

    async def wait_many(self, task_ids: list[str],
                        timeout_s: float | None = None) -> list[Task]:
        return await self._call(lambda h: h.wait_many.remote(task_ids, timeout_s))

    async def cancel(self, task_id: str) -> Task:
        return await self._call(lambda h: h.cancel.remote(task_id))

    async def requeue(self, task_id: str) -> Task:
        return await self._call(lambda h: h.requeue.remote(task_id))

    async def list_tasks(self, *, status: str | None = None, agent_type: str | None = None,
                         tenant: str | None = None, batch_id: str | None = None,
                         limit: int = 50, cursor: str | None = None) -> TaskPage:
        return await self._call(lambda h: h.list_tasks.remote(
            status=status, agent_type=agent_type, tenant=tenant, batch_id=batch_id,
            limit=limit, cursor=cursor))

    async def dead_letters(self, limit: int = 100, cursor: str | None = None) -> TaskPage:
        return await self._call(lambda h: h.dead_letters.remote(limit, cursor))

    async def attempts(self, task_id: str, tenant: str | None = None) -> list[Attempt]:
        return await self._call(lambda h: h.attempts.remote(task_id, tenant))

    async def events(self, task_id: str, after_id: int = 0,
                     tenant: str | None = None) -> list[TaskEvent]:
        return await self._call(lambda h: h.events.remote(task_id, after_id, tenant))

    async def tenant_events(self, tenant: str, after_id: int = 0) -> list[TaskEvent]:
        return await self._call(lambda h: h.tenant_events.remote(tenant, after_id))

    async def task_output(self, task_id: str, attempt: int, kind: str,
                          data: dict[str, Any]) -> bool:
        return await self._call(lambda h: h.task_output.remote(task_id, attempt, kind, data))

    async def last_event_id(self) -> int:
        return await self._call(lambda h: h.last_event_id.remote())

    async def batch_status(self, batch_id: str, tenant: str = "default") -> BatchStatus:
        return await self._call(lambda h: h.batch_status.remote(batch_id, tenant))

    async def status(self) -> dict[str, Any]:
        return await self._call(lambda h: h.status.remote())

    async def agent_stats(self, window_s: float = 3600.0,
                          tenant: str | None = None) -> dict[str, dict[str, Any]]:
        return await self._call(lambda h: h.agent_stats.remote(window_s, tenant))

    async def inbox(self, agent_type: str, include_acked: bool = False, limit: int = 50,
                    cursor: str | None = None, tenant: str = "default") -> dict[str, Any]:
        return await self._call(lambda h: h.inbox.remote(
            agent_type, include_acked, limit, cursor, tenant))

    async def ack_message(self, message_id: str, tenant: str = "default") -> Any:
        return await self._call(lambda h: h.ack_message.remote(message_id, tenant))

    async def scale(self, agent_type: str, replicas: int | None = None, *,
                    min_replicas: int | None = None, max_replicas: int | None = None,
                    reset: bool = False) -> dict[str, Any]:
        return await self._call(lambda h: h.scale.remote(
            agent_type, replicas, min_replicas=min_replicas, max_replicas=max_replicas,
            reset=reset))

    async def feedback(self, task_id: str, agent_type: str) -> dict[str, Any]:
        return await self._call(lambda h: h.feedback.remote(task_id, agent_type))

    async def route(self, description: str, tenant: str = "default") -> RouteDecision:
        return await self._call(lambda h: h.route.remote(description, tenant))

    async def router_state(self, tenant: str = "default") -> dict[str, Any]:
        return await self._call(lambda h: h.router_state.remote(tenant))

    async def ready(self) -> bool:
        return await self._call(lambda h: h.ready.remote())

    async def drain(self, timeout_s: float = 60.0) -> dict[str, int]:
        return await self._call(lambda h: h.drain.remote(timeout_s))

    async def stop_pools(self) -> int:
        return await self._call(lambda h: h.stop_pools.remote())

    async def submit_workflow(self, document: dict[str, Any] | str, input: Any = None, *,
                              idempotency_key: str | None = None, tenant: str = "default",
                              wait_s: float | None = None,
                              callback_url: str | None = None) -> RunDetail:
        return await self._call(lambda h: h.submit_workflow.remote(
            document, input, idempotency_key=idempotency_key, tenant=tenant, wait_s=wait_s,
            callback_url=callback_url))

    async def get_run(self, run_id: str, tenant: str = "default") -> RunDetail:
        return await self._call(lambda h: h.get_run.remote(run_id, tenant))

    async def wait_run(self, run_id: str, timeout_s: float | None = None,
                       tenant: str = "default") -> RunDetail:
        return await self._call(lambda h: h.wait_run.remote(run_id, timeout_s, tenant))

    async def list_runs(self, tenant: str = "default", status: str | None = None,
                        limit: int = 50, cursor: str | None = None) -> RunPage:
        return await self._call(lambda h: h.list_runs.remote(tenant, status, limit, cursor))

    async def decide(self, run_id: str, step_id: str, decision: str, actor: str,
                     comment: str | None = None, tenant: str = "default",
                     map_index: int = -1) -> RunDetail:
        return await self._call(lambda h: h.decide.remote(
            run_id, step_id, decision, actor, comment, tenant, map_index))

    async def cancel_run(self, run_id: str, tenant: str = "default") -> RunDetail:
        return await self._call(lambda h: h.cancel_run.remote(run_id, tenant))

    async def retry_run(self, run_id: str, from_step: str,
                        tenant: str = "default") -> RunDetail:
        return await self._call(lambda h: h.retry_run.remote(run_id, from_step, tenant))

    async def run_events(self, run_id: str, after_id: int = 0,
                         tenant: str = "default") -> list[RunEvent]:
        return await self._call(lambda h: h.run_events.remote(run_id, after_id, tenant))

    async def purge_runs(self, older_than_s: float | None = None,
                         batch_size: int = 500) -> int:
        return await self._call(lambda h: h.purge_runs.remote(older_than_s, batch_size))

    async def plan(self, tenant: str, request: str, *, run: bool = False, input: Any = None,
                   group: str | None = None) -> dict[str, Any]:
        return await self._call(lambda h: h.plan.remote(
            tenant, request, run=run, input=input, group=group))

    async def llm_status(self) -> dict[str, Any]:
        return await self._call(lambda h: h.llm_status.remote())

    async def llm_usage(self, tenant: str) -> dict[str, Any]:
        return await self._call(lambda h: h.llm_usage.remote(tenant))

    async def set_llm_budget(self, tenant: str, limit_tokens: int | None,
                             period: str | None = None) -> dict[str, Any]:
        return await self._call(lambda h: h.set_llm_budget.remote(tenant, limit_tokens, period))

    async def create_webhook(self, tenant: str, url: str, events: list[str] | tuple[str, ...],
                             *, agent_type: str | None = None, workflow: str | None = None,
                             description: str | None = None, created_by: str | None = None,
                             enabled: bool = True) -> dict[str, Any]:
        return await self._call(lambda h: h.create_webhook.remote(
            tenant, url, events, agent_type=agent_type, workflow=workflow,
            description=description, created_by=created_by, enabled=enabled))

    async def list_webhooks(self, tenant: str) -> dict[str, Any]:
        return await self._call(lambda h: h.list_webhooks.remote(tenant))

    async def get_webhook(self, tenant: str, subscription_id: str) -> dict[str, Any]:
        return await self._call(lambda h: h.get_webhook.remote(tenant, subscription_id))

    async def update_webhook(self, tenant: str, subscription_id: str,
                             **changes: Any) -> dict[str, Any]:
        return await self._call(lambda h: h.update_webhook.remote(
            tenant, subscription_id, **changes))

    async def delete_webhook(self, tenant: str, subscription_id: str) -> dict[str, Any]:
        return await self._call(lambda h: h.delete_webhook.remote(tenant, subscription_id))

    async def rotate_webhook_secret(self, tenant: str, subscription_id: str,
                                    overlap_s: float = 86400.0) -> dict[str, Any]:
        return await self._call(lambda h: h.rotate_webhook_secret.remote(
            tenant, subscription_id, overlap_s))

    async def webhook_deliveries(self, tenant: str, *, subscription_id: str | None = None,
                                 status: str | None = None, task_id: str | None = None,
                                 event_kind: str | None = None, limit: int = 50,
                                 cursor: str | None = None) -> dict[str, Any]:
        return await self._call(lambda h: h.webhook_deliveries.remote(
            tenant, subscription_id=subscription_id, status=status, task_id=task_id,
            event_kind=event_kind, limit=limit, cursor=cursor))

    async def webhook_delivery(self, tenant: str, delivery_id: str) -> dict[str, Any]:
        return await self._call(lambda h: h.webhook_delivery.remote(tenant, delivery_id))

    async def redeliver_webhook(self, tenant: str, delivery_id: str) -> dict[str, Any]:
        return await self._call(lambda h: h.redeliver_webhook.remote(tenant, delivery_id))

    async def callback_secret(self, tenant: str, rotate: bool = False,
                              overlap_s: float = 86400.0) -> dict[str, Any]:
        return await self._call(lambda h: h.callback_secret.remote(tenant, rotate, overlap_s))

    async def post_message(self, tenant: str, agent_type: str, body: Any, *,
                           sender: str | None = None,
                           subject: str | None = None) -> InboxMessage:
        return await self._call(lambda h: h.post_message.remote(
            tenant, agent_type, body, sender=sender, subject=subject))

    async def ack_inbox_message(self, tenant: str, agent_type: str,
                                message_id: str) -> InboxMessage:
        return await self._call(lambda h: h.ack_inbox_message.remote(
            tenant, agent_type, message_id))
