"""`ymera inbox` and `ymera ack`, and the Python client's `inbox`/`ack`: each names a tenant
(`default` unless told), and the orchestrator reads and acks within that tenant only."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cluster import cli
from cluster import client as client_module
from cluster.client import Client
from storage.errors import NotFound
from storage.inbox import InboxStore
from storage.messages import InboxMessage, utcnow
from tests.support.inprocess_platform import inprocess_orchestrator

MESSAGE = InboxMessage(id="m" * 32, recipient="learning", body={"n": 1}, created_at=utcnow(),
                       tenant="acme", sender="communication", acked_at=utcnow())


class RecordingMethod:
    def __init__(self, calls: list[tuple[str, tuple[Any, ...]]], name: str,
                 answer: Any) -> None:
        self.calls, self.name, self.answer = calls, name, answer

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((self.name, args))
        return self.answer


class RecordingOrchestrator:
    """The orchestrator's actor handle, recording what the client asks of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.inbox = RecordingMethod(self.calls, "inbox",
                                     {"messages": [MESSAGE], "next_cursor": None})
        self.ack_message = RecordingMethod(self.calls, "ack_message", MESSAGE)


@pytest.fixture
def orchestrator(monkeypatch: pytest.MonkeyPatch) -> RecordingOrchestrator:
    handle = RecordingOrchestrator()
    monkeypatch.setattr(client_module.ray, "get", lambda ref: ref)
    monkeypatch.setattr(cli, "_client", lambda args: Client(handle))
    return handle


def test_the_commands_name_the_tenant_they_are_given(orchestrator, capsys) -> None:
    assert cli.main(["inbox", "learning", "--tenant", "acme", "--json"]) == 0
    assert cli.main(["ack", "m" * 32, "--tenant", "acme", "--json"]) == 0

    assert orchestrator.calls == [("inbox", ("learning", False, 20, None, "acme")),
                                  ("ack_message", ("m" * 32, "acme"))]
    listed, _ = json.JSONDecoder().raw_decode(capsys.readouterr().out)
    assert listed["messages"][0]["tenant"] == "acme"


def test_without_a_tenant_the_commands_mean_the_default_one(orchestrator) -> None:
    assert cli.main(["inbox", "learning"]) == 0
    assert cli.main(["ack", "m" * 32]) == 0

    assert [args[-1] for _, args in orchestrator.calls] == ["default", "default"]


async def test_the_orchestrator_reads_and_acks_within_the_tenant(tmp_path) -> None:
    async with inprocess_orchestrator(tmp_path) as orchestrator:
        async with await InboxStore.open(orchestrator.config.database_url) as inbox:
            mine = await inbox.post("learning", {"n": 1}, tenant="acme")
            theirs = await inbox.post("learning", {"canary": "zephyr"}, tenant="globex")

        page = await orchestrator.inbox("learning", tenant="acme")
        assert [m.id for m in page["messages"]] == [mine.id]
        assert (await orchestrator.inbox("learning"))["messages"] == []
        with pytest.raises(NotFound):
            await orchestrator.ack_message(theirs.id, tenant="acme")
        assert (await orchestrator.ack_message(theirs.id, "globex")).acked_at is not None
