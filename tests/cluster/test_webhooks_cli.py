"""`ymera webhooks ...`, `ymera inbox send` and `ymera submit --callback-url`, driven through the
Python client against a real orchestrator in this process (on its own event loop, standing in
for the actor): what each command prints with `--json` and as text, that secrets are printed
only by the commands that make them, that each names its tenant, and that bad arguments end
with status 1 or 2 and store nothing."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from actors.config import PoolConfig, WebhookSettings
from actors.orchestrator import Orchestrator
from cluster import cli, cli_common
from cluster import client as client_module
from cluster.client import Client
from storage.messages import utcnow
from storage.models import webhook_deliveries_table as deliveries
from storage.webhook_outbox import Notification, enqueue
from storage.webhook_store import WebhookStore
from tests.support.inprocess_platform import inprocess_orchestrator

URL = "https://hooks.example.com/ymera"
ADDRESSES = {"hooks.example.com": "93.184.216.34", "internal.example.com": "10.1.2.3"}


async def fake_getaddrinfo(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
    address = ADDRESSES.get(host, host)
    try:
        socket.inet_pton(socket.AF_INET, address)
    except OSError:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]


class LoopHandle:
    """The orchestrator actor's handle, for a real orchestrator running on `loop` in another
    thread: `handle.method.remote(...)` schedules the call there (`ray.get` waits for it)."""

    def __init__(self, orchestrator: Orchestrator, loop: asyncio.AbstractEventLoop) -> None:
        self.orchestrator, self.loop = orchestrator, loop

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.orchestrator, name)
        loop = self.loop

        class Remote:
            @staticmethod
            def remote(*args: Any, **kwargs: Any) -> Any:
                return asyncio.run_coroutine_threadsafe(method(*args, **kwargs), loop)

        return Remote

    def run(self, coroutine: Any) -> Any:
        """Run `coroutine` on the orchestrator's loop and return what it returns."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)


@contextlib.contextmanager
def platform_on_a_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       **overrides: Any) -> Iterator[LoopHandle]:
    """A real orchestrator on an event loop of its own thread, reached by the client (and so
    the CLI) as if over Ray. Loopback receivers are allowed, as an operator may allow an
    on-premises network."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    context = inprocess_orchestrator(
        tmp_path, webhooks=WebhookSettings(allowed_networks=("127.0.0.0/8",)), **overrides)
    orchestrator = asyncio.run_coroutine_threadsafe(context.__aenter__(), loop).result(60)
    orchestrator.webhook_address_lookup = fake_getaddrinfo
    handle = LoopHandle(orchestrator, loop)
    monkeypatch.setattr(client_module.ray, "get", lambda future: future.result(60))
    monkeypatch.setattr(cli_common, "client_of", lambda args: Client(handle))
    monkeypatch.setattr(cli, "_client", lambda args: Client(handle))
    try:
        yield handle
    finally:
        handle.run(context.__aexit__(None, None, None))
        handle.run(_cancel_the_rest())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopHandle]:
    with platform_on_a_loop(tmp_path, monkeypatch) as handle:
        yield handle


async def _cancel_the_rest() -> None:
    """Cancel what the platform left on its loop (the in-process delivery actor's loop)."""
    rest = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


def ymera(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    """`ymera argv... --json`: the exit status and the JSON it printed."""
    status = cli.main([*argv, "--json"])
    out = capsys.readouterr().out
    return status, json.loads(out) if out.strip() else None


def store(platform: LoopHandle) -> WebhookStore:
    return WebhookStore(platform.orchestrator.lifecycle.store.engine)


def test_a_subscription_is_added_listed_switched_rotated_and_deleted(platform, capsys) -> None:
    status, hook = ymera(capsys, "webhooks", "add", URL, "--events", "task.succeeded,run.*",
                         "--agent-type", "sleeper", "--description", "tickets",
                         "--tenant", "acme")
    assert status == 0 and hook["secret"].startswith("whsec_")
    assert hook["events"] == ["task.succeeded", "run.succeeded", "run.failed", "run.cancelled"]
    assert hook["created_by"].startswith("client:")
    secret, hook_id = hook.pop("secret"), hook["id"]

    assert ymera(capsys, "webhooks", "list", "--tenant", "acme") == (0, {"webhooks": [hook]})
    assert ymera(capsys, "webhooks", "list") == (0, {"webhooks": []})  # the default tenant's
    assert ymera(capsys, "webhooks", "show", hook_id, "--tenant", "acme") == (0, hook)
    status, disabled = ymera(capsys, "webhooks", "disable", hook_id, "--tenant", "acme")
    assert status == 0 and disabled["enabled"] is False and disabled["url"] == URL
    status, enabled = ymera(capsys, "webhooks", "enable", hook_id, "--tenant", "acme")
    assert status == 0 and enabled["enabled"] is True

    status, rotated = ymera(capsys, "webhooks", "rotate", hook_id, "--overlap", "1h",
                            "--tenant", "acme")
    assert status == 0 and rotated["secret"] not in (secret, None)
    expires = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert abs(expires - utcnow() - timedelta(hours=1)) < timedelta(minutes=1)
    assert platform.run(store(platform).signing_secrets("acme", hook_id)) == \
        [rotated["secret"], secret]

    assert ymera(capsys, "webhooks", "delete", hook_id, "--tenant", "acme") == \
        (0, {"id": hook_id, "deleted": True})
    status, error = ymera(capsys, "webhooks", "show", hook_id, "--tenant", "acme")
    assert status == 1 and error["error"]["code"] == "not_found"


def test_the_secret_is_printed_by_add_and_rotate_only(platform, capsys) -> None:
    assert cli.main(["webhooks", "add", URL, "--events", "*"]) == 0
    added = capsys.readouterr().out
    secret = added.split("secret: ")[1].split()[0]
    assert secret.startswith("whsec_") and f"{URL}" in added and "shown this once" in added
    hook_id = added.split()[0]
    for argv in (["list"], ["show", hook_id], ["disable", hook_id]):
        assert cli.main(["webhooks", *argv]) == 0
        out = capsys.readouterr().out
        assert hook_id in out and "whsec_" not in out, argv
    assert cli.main(["webhooks", "rotate", hook_id]) == 0
    assert "secret: whsec_" in capsys.readouterr().out


@pytest.mark.parametrize("argv, field", [
    (["--events", "task.finished"], "events"),
    (["--events", "task.succeeded", "--agent-type", "nobody"], "agent_type"),
])
def test_bad_subscriptions_exit_1_naming_the_field_and_store_nothing(platform, capsys, argv,
                                                                     field) -> None:
    status, error = ymera(capsys, "webhooks", "add", URL, *argv)
    assert status == 1 and error["error"]["details"]["field"] == field
    assert ymera(capsys, "webhooks", "list") == (0, {"webhooks": []})


def test_a_private_address_is_refused_at_subscription_time(platform, capsys) -> None:
    status, error = ymera(capsys, "webhooks", "add", "https://internal.example.com/x",
                          "--events", "*")
    assert status == 1 and error["error"]["code"] == "invalid_request"
    assert "10.1.2.3, a private address" in error["error"]["message"]
    assert ymera(capsys, "webhooks", "list") == (0, {"webhooks": []})


@pytest.mark.parametrize("argv", [
    ["webhooks", "rotate", "wh_1", "--overlap", "a while"],
    ["webhooks", "add", URL],                                   # no --events
    ["webhooks", "deliveries", "--status", "lost"],
])
def test_bad_arguments_are_refused_before_anything_is_asked(platform, argv) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2


def test_deliveries_are_listed_read_and_redelivered(platform, capsys) -> None:
    _, hook = ymera(capsys, "webhooks", "add", URL, "--events", "task.*", "--tenant", "acme")
    now = utcnow()

    async def notify() -> None:
        async with store(platform)._transaction("test notifications") as connection:
            await enqueue(connection, [Notification(
                "acme", kind, {"task_id": task_id, "status": kind.split(".")[1]},
                task_id=task_id, agent_type="sleeper")
                for task_id, kind in (("t1", "task.succeeded"), ("t2", "task.dead"))], now)
            # due tomorrow: the platform's delivery actor leaves them to this test
            await connection.execute(update(deliveries).values(
                next_attempt_at=now + timedelta(days=1)))

    platform.run(notify())
    status, page = ymera(capsys, "webhooks", "deliveries", "--tenant", "acme")
    assert status == 0 and [d["task_id"] for d in page["deliveries"]] == ["t2", "t1"]
    assert {d["subscription_id"] for d in page["deliveries"]} == {hook["id"]}
    dead = page["deliveries"][0]
    assert ymera(capsys, "webhooks", "deliveries", "--event", "task.succeeded",
                 "--tenant", "acme")[1]["deliveries"][0]["task_id"] == "t1"
    assert ymera(capsys, "webhooks", "deliveries", "--tenant", "globex")[1] == \
        {"deliveries": [], "next_cursor": None}

    platform.run(store(platform).record_attempt(
        dead["id"], number=1, at=utcnow(), status_code=410, error="HTTP 410",
        response_excerpt="gone for good", duration_ms=7.0, outcome="failed"))
    status, shown = ymera(capsys, "webhooks", "delivery", dead["id"], "--tenant", "acme")
    assert status == 0 and shown["status"] == "failed"
    assert [(a["number"], a["status_code"], a["response_excerpt"])
            for a in shown["attempts"]] == [(1, 410, "gone for good")]
    assert cli.main(["webhooks", "delivery", dead["id"], "--tenant", "acme"]) == 0
    text = capsys.readouterr().out
    assert f"{dead['id']}  failed" in text and "#1" in text and "410" in text

    status, again = ymera(capsys, "webhooks", "redeliver", dead["id"], "--tenant", "acme")
    assert status == 0 and (again["id"], again["status"]) == (dead["id"], "pending")
    status, error = ymera(capsys, "webhooks", "redeliver", dead["id"], "--tenant", "globex")
    assert status == 1 and error["error"]["code"] == "not_found"


def test_the_callback_secret_is_shown_and_rotated(platform, capsys) -> None:
    status, first = ymera(capsys, "webhooks", "callback-secret", "--tenant", "acme")
    assert status == 0 and first["secret"].startswith("whsec_") and first["rotated"] is False
    assert ymera(capsys, "webhooks", "callback-secret", "--tenant", "acme")[1] == first
    status, rotated = ymera(capsys, "webhooks", "callback-secret", "--rotate", "--overlap",
                            "2d", "--tenant", "acme")
    assert status == 0 and rotated["secret"] != first["secret"]
    assert platform.run(store(platform).signing_secrets("acme", None)) == \
        [rotated["secret"], first["secret"]]


def test_inbox_send_leaves_a_message_the_inbox_lists(platform, capsys) -> None:
    status, sent = ymera(capsys, "inbox", "send", "learning", "--body",
                         '{"payload": {"rows": [1, 2]}}', "--subject", "new data",
                         "--tenant", "acme")
    assert status == 0 and sent["recipient"] == "learning" and sent["tenant"] == "acme"
    assert sent["sender"].startswith("client:") and sent["subject"] == "new data"
    status, page = ymera(capsys, "inbox", "learning", "--tenant", "acme")
    assert [(m["id"], m["body"]) for m in page["messages"]] == \
        [(sent["id"], {"payload": {"rows": [1, 2]}})]
    assert ymera(capsys, "inbox", "learning")[1]["messages"] == []  # not the default tenant's


@pytest.mark.parametrize("argv, words", [
    (["inbox", "send", "learning", "--body", "{not json"], "--body is not valid JSON"),
    (["inbox", "send", "learning"], "--body JSON"),
    (["inbox", "send", "nobody", "--body", "1"], "no agent type 'nobody'"),
    (["inbox", "learning", "--body", "1"], "ymera inbox send AGENT_TYPE"),
])
def test_a_bad_message_exits_1_and_sends_nothing(platform, capsys, argv, words) -> None:
    status, error = ymera(capsys, *argv)
    assert status == 1 and words in error["error"]["message"]
    assert ymera(capsys, "inbox", "learning", "--all")[1]["messages"] == []


def test_submit_takes_a_callback_url(platform, capsys) -> None:
    status, submitted = ymera(capsys, "submit", "wait a moment", "--agent-type", "sleeper",
                              "--callback-url", "http://127.0.0.1:9/done")
    assert status == 0, submitted
    status, task = ymera(capsys, "get", submitted["id"])
    assert status == 0 and task["callback_url"] == "http://127.0.0.1:9/done"
    status, error = ymera(capsys, "submit", "again", "--agent-type", "sleeper",
                          "--callback-url", "ftp://hooks.example.com/")
    assert status == 1 and error["error"]["details"]["field"] == "callback_url"


def test_the_example_receives_and_verifies_every_delivery(tmp_path, monkeypatch,
                                                          capsys) -> None:
    """examples/webhooks_python.py against a platform whose tasks run and whose delivery actor
    sends for real: every task's event and the callback arrive, signed and verified."""
    import runpy

    example = runpy.run_path(str(Path(__file__).resolve().parents[2] / "examples"
                                 / "webhooks_python.py"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with platform_on_a_loop(tmp_path, monkeypatch,
                            pools={"calculator": PoolConfig(replicas=1)}) as handle:
        monkeypatch.setattr(Client, "connect", classmethod(lambda cls: Client(handle)))
        args = argparse.Namespace(tasks=2, tenant="acme", port=port, public_url=None,
                                  wait=30.0)
        status = asyncio.run(example["main"](args))
        out = capsys.readouterr().out
        assert status == 0, out
        assert out.count("/hook  task.succeeded") == 2 and "/callback  task.succeeded" in out
        assert "all 3 deliveries arrived and verified" in out and "refused" not in out
        assert handle.run(store(handle).list_subscriptions("acme")) == []  # it cleaned up
