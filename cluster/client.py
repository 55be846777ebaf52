"""The Python client: submit and follow tasks from any driver connected to the cluster.

    from cluster.client import Client
    client = Client.connect()            # YMERA_RAY_ADDRESS or the local cluster
    task_id = client.submit("add the numbers", {"numbers": [1, 2]}, agent_type="calculator")
    task = client.wait(task_id, timeout_s=30)

    run = client.submit_workflow(Path("examples/workflows/report.yaml"), {"rows": [...]})
    run = client.wait_run(run.run.id, timeout_s=60)

Every submission carries an idempotency key (yours, or one made here), so if the orchestrator
restarts while a call is in flight, Ray's retry of that call cannot create a second task.
"""

from __future__ import annotations

import builtins
import getpass
import logging
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from actors.deploy import find_orchestrator
from actors.errors import PlatformUnavailable
from actors.orchestrator_api import ActorOrchestrator, ray_errors_translated
from cluster.batch.workflows import MAX_WORKFLOW_FILE_BYTES, WORKFLOW_SUFFIXES
from cluster.knowledge_client import KnowledgeCalls
from cluster.ray_env import prepare_ray_environment, ray_notices_to_stderr
from cluster.webhooks_client import WebhookCalls
from storage.errors import InvalidRequest
from storage.messages import Attempt, BatchStatus, Task, TaskEvent, TaskRequest
from storage.task_store import TaskPage
from storage.workflow_records import UNMAPPED, RunDetail, RunEvent, RunPage

def connect_ray(address: str | None, namespace: str) -> None:
    """Join the Ray cluster at `address` ("auto" = the local one) in `namespace`, from any
    process: the environment a local cluster needs (`cluster.ray_env`) is set first, keeping
    what the caller set, and a loopback head is joined from loopback, where it listens.

    A `HOST:PORT` address is probed first: Ray itself would retry an absent one for minutes.
    """
    prepare_ray_environment()
    if ray.is_initialized():
        return
    host, _, port = (address or "").rpartition(":")
    if address and host and port.isdigit() and "://" not in address:
        try:
            socket.create_connection((host, int(port)), timeout=2.0).close()
        except OSError as exc:
            raise PlatformUnavailable(f"no Ray cluster answers at {address}: {exc}") from None
    node_ip = "127.0.0.1" if host in ("127.0.0.1", "localhost") else None
    ray.init(address=address or "auto", namespace=namespace, log_to_driver=False,
             logging_level=logging.WARNING, _node_ip_address=node_ip)
    ray_notices_to_stderr()


class Client(KnowledgeCalls, WebhookCalls):
    """Blocking calls to the orchestrator's operations (`actors.orchestrator_api`), and their
    `*_async` twins for asyncio drivers. Errors are the platform's (`storage.errors`,
    `actors.errors`), raised as the orchestrator raised them; an orchestrator that is dead,
    restarting or unreachable, or storage that is down, is `PlatformUnavailable` (retry later),
    in the blocking and the async calls alike (`ray_errors_translated`)."""

    def __init__(self, orchestrator: Any) -> None:
        self.orchestrator = orchestrator
        self._async = ActorOrchestrator(orchestrator)

    @classmethod
    def connect(cls, address: str | None = None, namespace: str | None = None) -> Client:
        """A client of the platform at `address`, else YMERA_RAY_ADDRESS, else (in a Ray job)
        RAY_ADDRESS, else the local head that `ymera up` started (recorded in
        YMERA_STATE_DIR). Works from a plain `python` process; raises `PlatformUnavailable` at
        once when no platform is running."""
        from cluster.local_ray import default_ray_address
        from cluster.settings import Settings

        settings = Settings()
        namespace = namespace or settings.namespace
        if not ray.is_initialized():
            connect_ray(address or settings.ray_address
                        or default_ray_address(settings.state_path, settings.ray_port), namespace)
        return cls(find_orchestrator(namespace))

    def _result(self, invoke: Callable[[Any], ray.ObjectRef]) -> Any:
        """`ray.get` of `invoke(handle)` (one typed method call), errors translated."""
        with ray_errors_translated():
            return ray.get(invoke(self.orchestrator))

    def _caller(self) -> str:
        """Who this client acts as, where the platform records it: `client:<user name>`."""
        return f"client:{_user_name()}"

    def submit(self, description: str, payload: dict[str, Any] | None = None, *,
               agent_type: str | None = None, priority: int = 0, timeout_s: float | None = None,
               max_attempts: int | None = None, idempotency_key: str | None = None,
               tenant: str = "default", batch_id: str | None = None,
               callback_url: str | None = None) -> str:
        """Submit one task; returns its id once the task is durable. With `callback_url`, that
        URL is sent the task's outcome (signed with the tenant's callback secret) when it
        finishes."""
        return self.submit_many([TaskRequest(
            description, payload if payload is not None else {}, agent_type, priority, timeout_s,
            max_attempts, idempotency_key, tenant, batch_id, callback_url)])[0]

    def run(self, description: str, payload: dict[str, Any] | None = None, *,
            wait_s: float = 300.0, agent_type: str | None = None, priority: int = 0,
            timeout_s: float | None = None, max_attempts: int | None = None,
            idempotency_key: str | None = None, tenant: str = "default",
            callback_url: str | None = None) -> Task:
        """Submit one task and wait for it in the same call to the orchestrator: the task once
        finished, or as it stands after `wait_s` (then `wait` for it by its id). The task is
        durable before it runs, as with `submit`, and a retried call (same idempotency key, one
        is made when none is given) never submits it twice."""
        request = _keyed(TaskRequest(
            description, payload if payload is not None else {}, agent_type, priority, timeout_s,
            max_attempts, idempotency_key, tenant, None, callback_url))
        return self._result(lambda h: h.accept.remote(request, wait_s))

    async def run_async(self, description: str, payload: dict[str, Any] | None = None, *,
                        wait_s: float = 300.0, agent_type: str | None = None,
                        tenant: str = "default", idempotency_key: str | None = None) -> Task:
        """`run` for asyncio drivers."""
        request = _keyed(TaskRequest(description, payload if payload is not None else {},
                                     agent_type, idempotency_key=idempotency_key, tenant=tenant))
        return await self._async.accept(request, wait_s)

    def submit_many(self, requests: builtins.list[TaskRequest]) -> builtins.list[str]:
        """Submit tasks together (all accepted or none); ids in the same order."""
        keyed = [_keyed(r) for r in requests]
        return self._result(lambda h: h.submit_many.remote(keyed))

    def get(self, task_id: str) -> Task:
        return self._result(lambda h: h.get.remote(task_id))

    def wait(self, task_id: str, timeout_s: float | None = None) -> Task:
        """The task when finished, or as it stands after `timeout_s`."""
        return self._result(lambda h: h.wait.remote(task_id, timeout_s))

    def wait_many(self, task_ids: builtins.list[str],
                  timeout_s: float | None = None) -> builtins.list[Task]:
        return self._result(lambda h: h.wait_many.remote(task_ids, timeout_s))

    def cancel(self, task_id: str) -> Task:
        return self._result(lambda h: h.cancel.remote(task_id))

    def list(self, *, status: str | None = None, agent_type: str | None = None,
             batch_id: str | None = None, limit: int = 50, cursor: str | None = None) -> TaskPage:
        return self._result(lambda h: h.list_tasks.remote(
            status=status, agent_type=agent_type, batch_id=batch_id, limit=limit, cursor=cursor))

    def dead(self, limit: int = 100, cursor: str | None = None) -> TaskPage:
        return self._result(lambda h: h.dead_letters.remote(limit, cursor))

    def requeue(self, task_id: str) -> Task:
        return self._result(lambda h: h.requeue.remote(task_id))

    def attempts(self, task_id: str) -> builtins.list[Attempt]:
        return self._result(lambda h: h.attempts.remote(task_id))

    def events(self, task_id: str, after_id: int = 0) -> builtins.list[TaskEvent]:
        return self._result(lambda h: h.events.remote(task_id, after_id))

    def status(self) -> dict[str, Any]:
        return self._result(lambda h: h.status.remote())

    def agent_stats(self, window_s: float = 3600.0) -> dict[str, dict[str, Any]]:
        return self._result(lambda h: h.agent_stats.remote(window_s))

    def inbox(self, agent_type: str, *, include_acked: bool = False, limit: int = 50,
              cursor: str | None = None, tenant: str = "default") -> dict[str, Any]:
        """`tenant`'s messages in an agent type's inbox, oldest first:
        {"messages", "next_cursor"}."""
        return self._result(lambda h: h.inbox.remote(
            agent_type, include_acked, limit, cursor, tenant))

    def ack(self, message_id: str, tenant: str = "default") -> Any:
        """Acknowledge `tenant`'s inbox message (`NotFound` for another tenant's);
        acknowledging twice keeps the first time."""
        return self._result(lambda h: h.ack_message.remote(message_id, tenant))

    def scale(self, agent_type: str, replicas: int | None = None, *,
              min_replicas: int | None = None, max_replicas: int | None = None,
              reset: bool = False) -> dict[str, Any]:
        """Pin a pool at `replicas`, or set its autoscaling bounds, or with `reset` give it
        its configured bounds again; what is set outlives orchestrator restarts. Returns the
        pool."""
        return self._result(lambda h: h.scale.remote(
            agent_type, replicas, min_replicas=min_replicas, max_replicas=max_replicas,
            reset=reset))

    def feedback(self, task_id: str, agent_type: str) -> dict[str, Any]:
        """Teach the router that this task should have gone to `agent_type`, for the task's
        tenant only: {"agent_type", "added", "replaced"}."""
        return self._result(lambda h: h.feedback.remote(task_id, agent_type))

    def route(self, description: str, tenant: str = "default") -> Any:
        """The `RouteDecision` the router would make for `description` of `tenant`, from the
        shared examples and that tenant's own (nothing is run)."""
        return self._result(lambda h: h.route.remote(description, tenant))

    def router_state(self, tenant: str = "default") -> dict[str, Any]:
        """The router's examples per type and source (shared ones and `tenant`'s own), policy,
        statistics and waiting tasks."""
        return self._result(lambda h: h.router_state.remote(tenant))

    def batch_status(self, batch_id: str, tenant: str = "default") -> BatchStatus:
        """Counts by status of the tasks of batch `batch_id` (`NotFound` when it has none)."""
        return self._result(lambda h: h.batch_status.remote(batch_id, tenant))

    async def submit_many_async(self, requests: builtins.list[TaskRequest]) -> builtins.list[str]:
        """`submit_many` for asyncio drivers (batch jobs): awaits instead of blocking."""
        keyed = [_keyed(r) for r in requests]
        return await self._async.submit_many(keyed)

    async def wait_many_async(self, task_ids: builtins.list[str],
                              timeout_s: float | None = None) -> builtins.list[Task]:
        """`wait_many` for asyncio drivers: the tasks once finished, or as they stand after
        `timeout_s`."""
        return await self._async.wait_many(task_ids, timeout_s)

    # ------------------------------------------------------------- workflows

    def submit_workflow(self, spec_or_function: Any, input: Any = None, *,
                        idempotency_key: str | None = None, tenant: str = "default",
                        wait_s: float | None = None,
                        callback_url: str | None = None) -> RunDetail:
        """Start a run of a workflow with `input`; returns the run once it is durable (or,
        with `wait_s`, once it finished or `wait_s` ran out). The workflow is a document (a
        dict, or YAML/JSON text), a `pathlib.Path` of a .yaml/.yml/.json file, a
        `cluster.workflow_builder.Workflow`, or a function of no arguments returning one of
        those. The same `idempotency_key` (per tenant) always gives the same run; without one,
        a key is made here so a retried call cannot start a second run. With `callback_url`,
        that URL is sent the run's outcome when it finishes (docs/webhooks.md)."""
        document = workflow_document(spec_or_function)
        key = idempotency_key or f"auto:{uuid.uuid4().hex}"
        return self._result(lambda h: h.submit_workflow.remote(
            document, input, idempotency_key=key, tenant=tenant, wait_s=wait_s,
            callback_url=callback_url))

    def get_run(self, run_id: str, tenant: str = "default") -> RunDetail:
        """The run with its steps (`NotFound` also for another tenant's run)."""
        return self._result(lambda h: h.get_run.remote(run_id, tenant))

    def wait_run(self, run_id: str, timeout_s: float | None = None,
                 tenant: str = "default") -> RunDetail:
        """The run once finished, or as it stands after `timeout_s`."""
        return self._result(lambda h: h.wait_run.remote(run_id, timeout_s, tenant))

    def list_runs(self, tenant: str = "default", status: str | None = None, limit: int = 50,
                  cursor: str | None = None) -> RunPage:
        """`tenant`'s runs, newest first, a page at a time."""
        return self._result(lambda h: h.list_runs.remote(tenant, status, limit, cursor))

    def approve(self, run_id: str, step_id: str, comment: str | None = None, *,
                actor: str | None = None, tenant: str = "default",
                map_index: int = UNMAPPED) -> RunDetail:
        """Approve a step awaiting approval (`Conflict` if it is not awaiting one); `actor`,
        recorded as who decided, is `client:<your user name>` unless given."""
        return self._decide(run_id, step_id, "approve", comment, actor, tenant, map_index)

    def reject(self, run_id: str, step_id: str, comment: str | None = None, *,
               actor: str | None = None, tenant: str = "default",
               map_index: int = UNMAPPED) -> RunDetail:
        """Reject a step awaiting approval; see `approve`."""
        return self._decide(run_id, step_id, "reject", comment, actor, tenant, map_index)

    def _decide(self, run_id: str, step_id: str, decision: str, comment: str | None,
                actor: str | None, tenant: str, map_index: int) -> RunDetail:
        who = actor or f"client:{_user_name()}"
        return self._result(lambda h: h.decide.remote(
            run_id, step_id, decision, who, comment, tenant, map_index))

    def cancel_run(self, run_id: str, tenant: str = "default") -> RunDetail:
        """Cancel a run and its waiting and running steps (`Conflict` if it finished)."""
        return self._result(lambda h: h.cancel_run.remote(run_id, tenant))

    def retry_from(self, run_id: str, step_id: str, tenant: str = "default") -> RunDetail:
        """Run a failed or cancelled run again from `step_id`: that step and what depends on
        it run again, steps that succeeded are kept."""
        return self._result(lambda h: h.retry_run.remote(run_id, step_id, tenant))

    def run_events(self, run_id: str, after_id: int = 0,
                   tenant: str = "default") -> builtins.list[RunEvent]:
        """The run's events after `after_id`, oldest first (pass the last id to resume)."""
        return self._result(lambda h: h.run_events.remote(run_id, after_id, tenant))

    def purge_runs(self, older_than_s: float | None = None) -> int:
        """Operator: delete runs finished more than `older_than_s` ago (default: the
        retention setting); returns how many were deleted."""
        return self._result(lambda h: h.purge_runs.remote(older_than_s))

    # ------------------------------------------------------------- the planner

    def plan(self, request: str, *, run: bool = False, input: Any = None,
             model: str | None = None, tenant: str = "default") -> dict[str, Any]:
        """A workflow for `request`, written by the configured language model from the
        registered agent types and checked before you see it: {"document" (what you review,
        edit and submit), "rendered" (it as text), "attempts", "problems" (of refused
        attempts), "run_id", "usage"}. Nothing runs unless `run` is true: then the plan starts
        at once as a run of `tenant` with `input` and "run_id" names it (the same plan with the
        same input is the same run, started once). `model` is a model group (default: the
        configured default). `PlanRefused` lists each attempt's problem; `NoModelConfigured`
        says how to configure a model."""
        return self._result(lambda h: h.plan.remote(
            tenant, request, run=run, input=input, group=model))

    # ------------------------------------------------------------- the model gateway

    def llm_status(self) -> dict[str, Any]:
        """Whether a model is configured; if so {"default_group", "groups", "deployments"
        (name, group, provider, model, breaker state)}, else {"hint"} saying how to add one."""
        return self._result(lambda h: h.llm_status.remote())

    def llm_usage(self, tenant: str = "default") -> dict[str, Any]:
        """`tenant`'s token budget this period and its model calls' tokens and cost:
        {"tenant", "budget", "usage"}."""
        return self._result(lambda h: h.llm_usage.remote(tenant))

    def set_llm_budget(self, tenant: str, limit_tokens: int | None,
                       period: str | None = None) -> dict[str, Any]:
        """Operator: `tenant` may use `limit_tokens` per `period` ("month", "day" or "total";
        None keeps the current one, month for a new budget); None tokens = unlimited (calls
        are still counted). Returns the budget's status."""
        return self._result(lambda h: h.set_llm_budget.remote(tenant, limit_tokens, period))

    async def submit_workflow_async(self, document: dict[str, Any] | str, input: Any = None, *,
                                    idempotency_key: str | None = None,
                                    tenant: str = "default",
                                    wait_s: float | None = None,
                                    callback_url: str | None = None) -> RunDetail:
        """`submit_workflow` of a document, for asyncio drivers (batch jobs)."""
        key = idempotency_key or f"auto:{uuid.uuid4().hex}"
        return await self._async.submit_workflow(document, input, idempotency_key=key,
                                                 tenant=tenant, wait_s=wait_s,
                                                 callback_url=callback_url)

    async def wait_run_async(self, run_id: str, timeout_s: float | None = None,
                             tenant: str = "default") -> RunDetail:
        """`wait_run` for asyncio drivers."""
        return await self._async.wait_run(run_id, timeout_s, tenant)


def workflow_document(source: Any) -> dict[str, Any] | str:
    """The document to submit for `source`: a dict or YAML/JSON text as it is; a `Path` (or a
    one-line text naming a .yaml/.yml/.json file) read; a builder `Workflow`'s `document()`; a
    function of no arguments called for one of those. Anything else is `InvalidRequest`."""
    from cluster.workflow_builder import Workflow

    if callable(source) and not isinstance(source, Workflow):
        source = source()
    if isinstance(source, Workflow):
        return source.document()
    if isinstance(source, dict):
        return source
    if isinstance(source, str) and not _names_a_file(source):
        return source
    if isinstance(source, (str, Path)):
        return read_workflow_file(Path(source))
    raise InvalidRequest(f"a workflow is a document (dict or YAML/JSON text), a Path to one, "
                         f"or a Workflow; not {type(source).__name__}", {"field": "workflow"})


def _names_a_file(text: str) -> bool:
    return ("\n" not in text and not text.lstrip().startswith("{")
            and text.strip().lower().endswith(WORKFLOW_SUFFIXES))


def read_workflow_file(path: Path) -> str:
    """The text of a workflow file (.yaml, .yml or .json); `InvalidRequest` naming the path
    when it has another suffix, cannot be read or is too large."""
    if path.suffix.lower() not in WORKFLOW_SUFFIXES:
        raise InvalidRequest(f"{path}: a workflow file ends in .yaml, .yml or .json",
                             {"field": "workflow", "path": str(path)})
    try:
        with open(path.expanduser(), "rb") as stream:
            data = stream.read(MAX_WORKFLOW_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidRequest(f"cannot read workflow {path}: {exc.strerror or exc}",
                             {"field": "workflow", "path": str(path)}) from None
    if len(data) > MAX_WORKFLOW_FILE_BYTES:
        raise InvalidRequest(f"{path}: a workflow file is at most {MAX_WORKFLOW_FILE_BYTES} "
                             "bytes", {"field": "workflow", "path": str(path)})
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"{path}: not UTF-8 text ({exc})",
                             {"field": "workflow", "path": str(path)}) from None


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        import os

        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def _keyed(request: TaskRequest) -> TaskRequest:
    """`request` with an idempotency key: its own, else a new one."""
    return request if request.idempotency_key else _with_key(request)


def _with_key(request: TaskRequest) -> TaskRequest:
    import dataclasses

    return dataclasses.replace(request, idempotency_key=f"auto:{uuid.uuid4().hex}")
