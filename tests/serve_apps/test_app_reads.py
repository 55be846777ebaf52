"""A task's history over HTTP is one orchestrator call and one store transaction, and still
shows another tenant's task exactly like a missing one."""

from __future__ import annotations

from typing import Any

import httpx

from serve_apps.app import create_app
from storage.task_store import TaskStore
from tests.serve_apps.test_app_harness import Platform, platform

__all__ = ["platform"]

API = "/api/v1"


class CountingPort:
    """The in-process orchestrator, counting the operations the API calls."""

    def __init__(self, orchestrator: Any) -> None:
        self.orchestrator = orchestrator
        self.calls: list[str] = []

    def __getattr__(self, operation: str) -> Any:
        implementation = getattr(self.orchestrator, operation)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(operation)
            return await implementation(*args, **kwargs)
        return counted


async def test_history_reads_are_one_call_and_one_transaction(platform: Platform,
                                                              monkeypatch) -> None:
    port = CountingPort(platform.orchestrator)
    app = create_app(platform.config, port, platform.auth_store, platform.limiter)
    headers = platform.bearer("acme", "viewer")
    submitted = await platform.orchestrator.accept(
        {"description": "nap", "agent_type": "sleeper", "payload": {"seconds": 0},
         "tenant": "acme"}, 5.0)
    reads = []
    real_fetch_all = TaskStore._fetch_all

    async def fetch_all(self: TaskStore, *statements: Any) -> list[list[Any]]:
        reads.append(len(statements))
        return await real_fetch_all(self, *statements)

    monkeypatch.setattr(TaskStore, "_fetch_all", fetch_all)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as http:
        for history, call in (("attempts", "attempts"), ("events", "events")):
            port.calls.clear()
            reads.clear()
            response = await http.get(f"{API}/tasks/{submitted.id}/{history}", headers=headers)
            assert response.status_code == 200 and response.json()[history]
            assert port.calls == [call] and len(reads) == 1
            other = await http.get(f"{API}/tasks/{submitted.id}/{history}",
                                   headers=platform.bearer("globex", "viewer"))
            assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
            missing = await http.get(f"{API}/tasks/no-such-task/{history}", headers=headers)
            assert missing.status_code == 404
            assert other.json()["error"]["message"] == missing.json()["error"]["message"] \
                .replace("no-such-task", submitted.id)
