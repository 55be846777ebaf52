"""The one typed way into the orchestrator: every operation is on every implementation with the
same signature, and Ray's errors become the platform's in one place, for blocking and awaited
calls alike."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import ray.exceptions

from actors.errors import PlatformUnavailable, QueueFull, storage_trouble
from actors.orchestrator import Orchestrator
from actors.orchestrator_api import ActorOrchestrator, OrchestratorApi, ray_errors_translated
from cluster.client import Client
from storage.errors import NotFound, SchemaOutOfDate, StorageError

OPERATIONS = sorted(name for name, value in vars(OrchestratorApi).items()
                    if inspect.iscoroutinefunction(value))


def _parameters(function: Any) -> list[tuple[str, Any, Any]]:
    # Ray's tracing adds `_ray_trace_ctx` to the methods of a class once this process has made
    # it an actor (as tests that start an orchestrator on the session's cluster do)
    signature = inspect.signature(function)
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()
            if p.name != "_ray_trace_ctx"]


@pytest.mark.parametrize("implementation", [Orchestrator, ActorOrchestrator])
@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_operation_has_the_interface_signature(implementation: type,
                                                     operation: str) -> None:
    implemented = inspect.unwrap(getattr(implementation, operation))
    assert inspect.iscoroutinefunction(implemented)
    assert _parameters(implemented) == _parameters(getattr(OrchestratorApi, operation))


def test_the_interface_covers_what_clients_use() -> None:
    assert {"accept", "submit_many", "get", "wait_many", "attempts", "events", "status",
            "scale", "route", "router_state", "batch_status"} <= set(OPERATIONS)


def _task_error(cause: BaseException) -> ray.exceptions.RayTaskError:
    return ray.exceptions.RayTaskError("Orchestrator.get", "Traceback ...", cause)


def test_a_platform_error_comes_out_as_itself() -> None:
    with pytest.raises(NotFound, match="no task") as caught:
        with ray_errors_translated():
            raise _task_error(NotFound("no task with id 'x'", {"task_id": "x"}))
    assert caught.value.details == {"task_id": "x"}
    with pytest.raises(QueueFull):
        with ray_errors_translated():
            raise _task_error(QueueFull("full", retry_after_s=2))


@pytest.mark.parametrize("lost", [
    ray.exceptions.RayActorError(),
    ray.exceptions.ActorDiedError(),
    ray.exceptions.ActorUnavailableError("restarting", None),
    ray.exceptions.GetTimeoutError("timed out"),
])
def test_an_orchestrator_that_does_not_answer_is_platform_unavailable(lost: Exception) -> None:
    with pytest.raises(PlatformUnavailable, match="not answering"):
        with ray_errors_translated():
            raise lost


def test_any_other_task_error_keeps_its_cause_type() -> None:
    with pytest.raises(ZeroDivisionError):
        with ray_errors_translated():
            raise _task_error(ZeroDivisionError("division by zero"))


class Ref:
    """What `handle.method.remote(...)` returns: here an awaitable that raises or answers."""

    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome

    def __await__(self):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome
        yield  # a generator: awaitable


class Handle:
    def __init__(self, outcome: Any) -> None:
        self.calls: list[tuple[str, tuple]] = []
        self.outcome = outcome

    def __getattr__(self, method: str) -> Any:
        handle = self

        class Method:
            @staticmethod
            def remote(*args: Any, **kwargs: Any) -> Ref:
                handle.calls.append((method, args))
                return Ref(handle.outcome)
        return Method


async def test_the_async_adapter_calls_the_typed_method_and_translates() -> None:
    handle = Handle({"accepting": True})
    assert await ActorOrchestrator(handle).status() == {"accepting": True}
    handle.outcome = _task_error(NotFound("no task"))
    with pytest.raises(NotFound):
        await ActorOrchestrator(handle).attempts("t1", "acme")
    assert handle.calls == [("status", ()), ("attempts", ("t1", "acme"))]


async def test_a_found_handle_is_looked_up_again_after_the_orchestrator_is_lost() -> None:
    handles = [Handle(ray.exceptions.ActorDiedError()), Handle({"accepting": True})]
    found = []

    async def find() -> Handle:
        found.append(handles[len(found)])
        return found[-1]

    port = ActorOrchestrator(find=find)
    with pytest.raises(PlatformUnavailable):
        await port.status()
    assert await port.status() == {"accepting": True} and len(found) == 2


def test_the_blocking_client_translates_with_the_same_helper(monkeypatch) -> None:
    def get(ref: Ref) -> Any:
        raise ref.outcome

    monkeypatch.setattr(ray, "get", get)
    with pytest.raises(PlatformUnavailable):
        Client(Handle(ray.exceptions.ActorUnavailableError("restarting", None))).get("t1")
    with pytest.raises(NotFound):
        Client(Handle(_task_error(NotFound("no task")))).get("t1")


@pytest.mark.parametrize(("exc", "trouble"), [
    (StorageError("reading from the database failed"), True),
    (ConnectionRefusedError(111, "Connect call failed"), True),
    (SchemaOutOfDate("run `ymera migrate`"), False),
    (NotFound("no task"), False),
    (ValueError("a bug"), False),
])
def test_what_counts_as_storage_trouble(exc: Exception, trouble: bool) -> None:
    assert storage_trouble(exc) is trouble


@pytest.mark.parametrize("operation", ["create_replica", "start_router", "find_actors", "call",
                                       "kill"])
def test_both_backends_implement_the_backend_protocol(operation: str) -> None:
    from actors.backend import Backend
    from actors.ray_backend import RayBackend
    from tests.support.inprocess_backend import InProcessBackend

    wanted = [name for name, *_ in _parameters(getattr(Backend, operation))]
    for backend in (RayBackend, InProcessBackend):
        assert [name for name, *_ in _parameters(getattr(backend, operation))] == wanted
