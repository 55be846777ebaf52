"""Events out through the orchestrator, end to end without a cluster: a tenant subscribes a
receiver on 127.0.0.1, tasks finish, and signed deliveries arrive that the Standard Webhooks
verifier accepts; a task's `callback_url` is called back; an address the SSRF guard refuses is
refused at submission, and nothing is stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from standardwebhooks import Webhook

from actors.config import PoolConfig, WebhookSettings
from actors.orchestrator import Orchestrator
from storage.errors import InvalidRequest
from storage.messages import TaskRequest, TaskStatus
from tests.support.inprocess_platform import inprocess_orchestrator
from tests.support.webhooks import Receiver, serving

SETTINGS = WebhookSettings(retry_base_s=0.05, retry_max_s=0.2, poll_interval_s=0.05,
                           allowed_networks=("127.0.0.1/32",))


@pytest.fixture
async def orchestrator(tmp_path) -> AsyncIterator[Orchestrator]:
    async with inprocess_orchestrator(tmp_path, webhooks=SETTINGS,
                                      pools={"flaky": PoolConfig(replicas=1)}) as running:
        yield running


async def received(receiver: Receiver, count: int, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(receiver.requests) < count:
        assert asyncio.get_running_loop().time() < deadline, \
            f"{len(receiver.requests)} of {count} deliveries arrived"
        await asyncio.sleep(0.02)


async def test_a_subscribed_tenant_gets_signed_deliveries_of_its_tasks_only(
    orchestrator: Orchestrator,
) -> None:
    async with serving() as receiver:
        created = await orchestrator.create_webhook("acme", receiver.url,
                                                    ["task.succeeded", "task.failed"])
        secret = created["secret"]
        ok = await orchestrator.submit(TaskRequest("works", {}, agent_type="flaky",
                                                   tenant="acme"))
        bad = await orchestrator.submit(TaskRequest("fails", {"bad": True}, agent_type="flaky",
                                                    tenant="acme"))
        other = await orchestrator.submit(TaskRequest("theirs", {}, agent_type="flaky",
                                                      tenant="globex"))
        for task_id in (ok, bad, other):
            await orchestrator.wait(task_id, 10)

        await received(receiver, 2)
        await asyncio.sleep(0.3)  # nothing more comes: globex has no subscription

    assert len(receiver.requests) == 2
    verifier = Webhook(secret)
    seen = {}
    for headers, body in receiver.requests:
        event = verifier.verify(body, headers)  # raises unless signed with the secret
        seen[event["data"]["task_id"]] = event
        assert headers["webhook-id"].startswith("msg_")
    assert seen[ok]["type"] == "task.succeeded" and seen[ok]["data"]["tenant"] == "acme"
    assert seen[bad]["type"] == "task.failed"
    assert seen[bad]["data"]["error"]["code"] == "invalid_task_input"
    deliveries = await orchestrator.webhook_deliveries("acme")
    assert {d["status"] for d in deliveries["deliveries"]} == {"delivered"}
    assert (await orchestrator.webhook_deliveries("globex"))["deliveries"] == []


async def test_a_task_with_a_callback_url_calls_back_signed_with_the_tenant_secret(
    orchestrator: Orchestrator,
) -> None:
    async with serving() as receiver:
        task_id = await orchestrator.submit(TaskRequest(
            "works", {}, agent_type="flaky", tenant="acme", callback_url=receiver.url))
        task = await orchestrator.wait(task_id, 10)
        await received(receiver, 1)

    assert task.status is TaskStatus.SUCCEEDED and task.callback_url == receiver.url
    secret = (await orchestrator.callback_secret("acme"))["secret"]
    headers, body = receiver.requests[0]
    event = Webhook(secret).verify(body, headers)
    assert event["type"] == "task.succeeded" and event["data"]["task_id"] == task_id


async def test_a_callback_url_the_guard_refuses_is_refused_at_submission(
    orchestrator: Orchestrator,
) -> None:
    for url, field in (("http://10.0.0.5/hook", "callback_url"),
                       ("ftp://example.com/x", "callback_url")):
        with pytest.raises(InvalidRequest) as caught:
            await orchestrator.submit(TaskRequest("works", {}, agent_type="flaky",
                                                  tenant="acme", callback_url=url))
        assert caught.value.details["field"] == field
    assert (await orchestrator.list_tasks(tenant="acme")).tasks == []


async def test_a_run_with_a_callback_url_calls_back_when_it_finishes(
    orchestrator: Orchestrator,
) -> None:
    document = {"name": "two", "version": "1",
                "steps": [{"id": "work", "agent_type": "flaky", "payload": {}}]}
    async with serving() as receiver:
        started = await orchestrator.submit_workflow(document, tenant="acme",
                                                     callback_url=receiver.url)
        finished = await orchestrator.wait_run(started.run.id, 10, tenant="acme")
        await received(receiver, 1)

    assert finished.run.status.value == "succeeded"
    assert finished.run.callback_url == receiver.url
    secret = (await orchestrator.callback_secret("acme"))["secret"]
    headers, body = receiver.requests[0]
    event = Webhook(secret).verify(body, headers)
    assert event["type"] == "run.succeeded" and event["data"]["run_id"] == started.run.id
    with pytest.raises(InvalidRequest) as caught:
        await orchestrator.submit_workflow(document, tenant="acme",
                                           callback_url="http://10.0.0.5/hook")
    assert caught.value.details["field"] == "callback_url"
