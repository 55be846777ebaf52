"""The orchestrator's read-throughs: public operations that answer from storage alone.

Each is one orchestrator call, and a read of one task's history is one store transaction that
also checks the task exists (and, given a tenant, is that tenant's), so a caller never needs a
second call to learn whether it may see the answer.

What is durable: everything these read (tasks, attempts, events, inbox messages).
What is rebuilt: nothing but the inbox store's connection, opened on first use.
Storage trouble reaches the caller as `PlatformUnavailable` (see `storage_trouble_unavailable`).
A task read one by one (`get`, `wait`, `wait_many`) carries `llm_usage` when it made model
calls: its tokens, cost and calls from the model usage records, read as the task's tenant.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from actors.errors import storage_trouble_unavailable
from storage.errors import InvalidRequest, NotFound
from storage.messages import NAME, Attempt, BatchStatus, Task, TaskEvent, TaskStatus, utcnow
from storage.task_store import TaskPage

if TYPE_CHECKING:
    from actors.config import OrchestratorConfig
    from actors.lifecycle import Lifecycle
    from storage.inbox import InboxStore


class StoreReads:
    """Read-through operations of `actors.orchestrator.Orchestrator` (a mixin: it needs the
    orchestrator's `config` and `_wait_ready`)."""

    config: OrchestratorConfig
    _inbox_store: InboxStore | None

    if TYPE_CHECKING:
        async def _wait_ready(self) -> Lifecycle: ...

    @storage_trouble_unavailable
    async def get(self, task_id: str) -> Task:
        [task] = await _read_with_usage(await self._wait_ready(), [task_id])
        if task is None:
            raise NotFound(f"no task with id {task_id!r}", {"task_id": task_id})
        return task

    @storage_trouble_unavailable
    async def wait(self, task_id: str, timeout_s: float | None = None) -> Task:
        """The task once it has finished, or as it stands when `timeout_s` runs out."""
        return (await self.wait_many([task_id], timeout_s))[0]

    @storage_trouble_unavailable
    async def wait_many(self, task_ids: list[str], timeout_s: float | None = None) -> list[Task]:
        import asyncio

        lifecycle = await self._wait_ready()
        waited = [lifecycle.live[t] for t in task_ids if t in lifecycle.live]
        for live in waited:
            live.waiters += 1  # its outcome's commit reads it back for us (`LiveTask.final`)
        try:
            if waited:
                await asyncio.wait_for(asyncio.gather(*(live.done.wait() for live in waited)),
                                       timeout_s)
        except asyncio.TimeoutError:
            pass
        finally:
            for live in waited:
                live.waiters -= 1
        finals = {live.id: live.final for live in waited if live.final is not None}
        if len(finals) == len(set(task_ids)):
            return [finals[t] for t in task_ids]
        found = await _read_with_usage(lifecycle, task_ids)
        missing = [t for t, task in zip(task_ids, found) if task is None]
        if missing:
            raise NotFound(f"no task with id {missing[0]!r}", {"task_ids": missing})
        return [task for task in found if task is not None]

    @storage_trouble_unavailable
    async def list_tasks(self, *, status: str | TaskStatus | None = None,
                         agent_type: str | None = None, tenant: str | None = None,
                         batch_id: str | None = None, limit: int = 50,
                         cursor: str | None = None) -> TaskPage:
        """Tasks newest first, `limit` at a time, filtered by whatever is given."""
        if isinstance(status, str):
            try:
                status = TaskStatus(status)
            except ValueError:
                raise InvalidRequest(
                    f"unknown status {status!r}; one of: "
                    f"{', '.join(s.value for s in TaskStatus)}", {"field": "status"}) from None
        return await (await self._wait_ready()).store.list_tasks(
            status=status, agent_type=agent_type, tenant=tenant, batch_id=batch_id,
            limit=limit, cursor=cursor)

    @storage_trouble_unavailable
    async def dead_letters(self, limit: int = 100, cursor: str | None = None) -> TaskPage:
        return await self.list_tasks(status=TaskStatus.DEAD, limit=limit, cursor=cursor)

    @storage_trouble_unavailable
    async def attempts(self, task_id: str, tenant: str | None = None) -> list[Attempt]:
        """The task's attempts, oldest first; `NotFound` when there is no such task or, with
        `tenant`, it is another tenant's."""
        return await (await self._wait_ready()).store.task_attempts(task_id, tenant)

    @storage_trouble_unavailable
    async def events(self, task_id: str, after_id: int = 0,
                     tenant: str | None = None) -> list[TaskEvent]:
        """The task's events after `after_id`, in order; `NotFound` as for `attempts`."""
        return await (await self._wait_ready()).store.task_events(task_id, after_id, tenant)

    @storage_trouble_unavailable
    async def tenant_events(self, tenant: str, after_id: int = 0) -> list[TaskEvent]:
        """The events of `tenant`'s tasks after `after_id`, in id order, a page at a time."""
        return await (await self._wait_ready()).store.tenant_events(tenant, after_id)

    @storage_trouble_unavailable
    async def last_event_id(self) -> int:
        """The newest event's id: where a stream that starts now resumes from."""
        return await (await self._wait_ready()).store.last_event_id()

    @storage_trouble_unavailable
    async def agent_stats(self, window_s: float = 3600.0, tenant: str | None = None
                          ) -> dict[str, dict[str, Any]]:
        """Per agent type over the last `window_s`: outcomes, success rate, retries, durations;
        with `tenant`, of that tenant's tasks only."""
        if not 0 < window_s <= 30 * 86400:
            raise InvalidRequest("window_s must be above 0 and at most 30 days",
                                 {"field": "window_s"})
        store = (await self._wait_ready()).store
        return await store.agent_stats(utcnow() - timedelta(seconds=window_s), tenant)

    @storage_trouble_unavailable
    async def task_counts(self, tenant: str) -> dict[str, int]:
        """`tenant`'s tasks per status (what a tenant may know of the platform's counts)."""
        return await (await self._wait_ready()).store.count_by_status(tenant)

    @storage_trouble_unavailable
    async def inbox(self, agent_type: str, include_acked: bool = False, limit: int = 50,
                    cursor: str | None = None, tenant: str = "default") -> dict[str, Any]:
        """`tenant`'s messages delivered to `agent_type`'s inbox (by the communication agent),
        oldest first."""
        messages, next_cursor = await (await self._inbox()).list(
            agent_type, tenant=tenant, include_acked=include_acked, limit=limit, cursor=cursor)
        return {"messages": messages, "next_cursor": next_cursor}

    @storage_trouble_unavailable
    async def ack_message(self, message_id: str, tenant: str = "default") -> Any:
        """Acknowledge `tenant`'s message; `NotFound` for another tenant's."""
        return await (await self._inbox()).ack(message_id, tenant=tenant)

    async def _inbox(self) -> InboxStore:
        await self._wait_ready()
        if self._inbox_store is None:
            from storage.inbox import InboxStore

            self._inbox_store = await InboxStore.open(self.config.database_url)
        return self._inbox_store

    @storage_trouble_unavailable
    async def batch_status(self, batch_id: str, tenant: str = "default") -> BatchStatus:
        """How batch `batch_id` of `tenant` stands: counts by status of the tasks it created.
        `NotFound` when that tenant has no task in it, so another tenant's batch looks exactly
        like a missing one."""
        for field, value in (("batch_id", batch_id), ("tenant", tenant)):
            if not isinstance(value, str) or not NAME.match(value):
                raise InvalidRequest(f"{field} must be 1 to 64 letters, digits, '_', '.', ':' "
                                     "or '-'", {"field": field})
        return await (await self._wait_ready()).store.batch_status(batch_id, tenant)


async def _read_with_usage(lifecycle: Lifecycle, task_ids: list[str]) -> list[Task | None]:
    """Each of `task_ids`' tasks (None for a missing one), with its model usage."""
    found = await lifecycle.store.get_tasks_with_usage(task_ids)
    return [found.get(task_id) for task_id in task_ids]
