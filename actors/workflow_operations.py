"""The orchestrator's workflow operations: each waits until the orchestrator is ready and hands
the call to its `WorkflowEngine` (`actors.workflow_engine`), with storage trouble reported as
`PlatformUnavailable` like every public operation. A mixin of `actors.orchestrator.Orchestrator`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.errors import PlatformUnavailable, storage_trouble_unavailable
from actors.events_out import check_callback_url
from storage.workflow_records import RunDetail, RunEvent, RunPage

if TYPE_CHECKING:
    from actors.lifecycle import Lifecycle
    from actors.workflow_engine import WorkflowEngine


class WorkflowOperations:
    """Workflow runs: submit, read, wait, list, decide, cancel, retry, events, purge."""

    workflows: WorkflowEngine
    accepting: bool

    if TYPE_CHECKING:
        async def _wait_ready(self) -> Lifecycle: ...

    @storage_trouble_unavailable
    async def submit_workflow(self, document: dict[str, Any] | str, input: Any = None, *,
                              idempotency_key: str | None = None, tenant: str = "default",
                              wait_s: float | None = None,
                              callback_url: str | None = None) -> RunDetail:
        """Store a run of the workflow `document` (a dict, or YAML/JSON text) with `input` and
        start it; returns it once durable (with `wait_s`, once finished or when `wait_s` runs
        out). The same (tenant, idempotency key) returns the same run. A bad document is
        `InvalidRequest` naming the step and field, and nothing is stored. With
        `callback_url`, that URL is sent the run's outcome when it finishes (signed with the
        tenant's callback secret)."""
        await self._wait_ready()
        if not self.accepting:
            raise PlatformUnavailable("the platform is draining and accepts no new runs")
        if callback_url is not None:
            await check_callback_url(callback_url, self.workflows.config)
        run = await self.workflows.submit(document, input, idempotency_key=idempotency_key,
                                          tenant=tenant, callback_url=callback_url)
        if wait_s is not None:
            return await self.workflows.wait(tenant, run.id, wait_s)
        return await self.workflows.detail(tenant, run.id)

    @storage_trouble_unavailable
    async def get_run(self, run_id: str, tenant: str = "default") -> RunDetail:
        await self._wait_ready()
        return await self.workflows.detail(tenant, run_id)

    @storage_trouble_unavailable
    async def wait_run(self, run_id: str, timeout_s: float | None = None,
                       tenant: str = "default") -> RunDetail:
        """The run once finished, or as it stands when `timeout_s` runs out."""
        await self._wait_ready()
        return await self.workflows.wait(tenant, run_id, timeout_s)

    @storage_trouble_unavailable
    async def list_runs(self, tenant: str = "default", status: str | None = None,
                        limit: int = 50, cursor: str | None = None) -> RunPage:
        await self._wait_ready()
        return await self.workflows.page(tenant, status, limit, cursor)

    @storage_trouble_unavailable
    async def decide(self, run_id: str, step_id: str, decision: str, actor: str,
                     comment: str | None = None, tenant: str = "default",
                     map_index: int = -1) -> RunDetail:
        """A person's decision ("approve" or "reject") on a step awaiting approval."""
        await self._wait_ready()
        return await self.workflows.decide(tenant, run_id, step_id, decision, actor, comment,
                                           map_index)

    @storage_trouble_unavailable
    async def cancel_run(self, run_id: str, tenant: str = "default") -> RunDetail:
        await self._wait_ready()
        return await self.workflows.cancel(tenant, run_id)

    @storage_trouble_unavailable
    async def retry_run(self, run_id: str, from_step: str,
                        tenant: str = "default") -> RunDetail:
        await self._wait_ready()
        return await self.workflows.retry(tenant, run_id, from_step)

    @storage_trouble_unavailable
    async def run_events(self, run_id: str, after_id: int = 0,
                         tenant: str = "default") -> list[RunEvent]:
        await self._wait_ready()
        return await self.workflows.events(tenant, run_id, after_id)

    @storage_trouble_unavailable
    async def purge_runs(self, older_than_s: float | None = None,
                         batch_size: int = 500) -> int:
        """Delete finished runs older than `older_than_s` (default: the configured
        retention), `batch_size` per transaction."""
        await self._wait_ready()
        return await self.workflows.purge(older_than_s, batch_size)
