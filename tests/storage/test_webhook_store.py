"""Webhook subscriptions and the delivery outbox: deliveries commit with the events that cause
them, only to the tenant's matching subscriptions, in order per task, and every read and write
stays inside its tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from standardwebhooks import Webhook

from storage.errors import InvalidRequest, NotFound
from storage.messages import utcnow
from storage.task_store import TaskStore, WriteBatch
from storage.webhook_outbox import task_notification
from storage.webhook_records import EVENT_KINDS, check_event_kinds
from storage.webhook_store import WebhookStore
from tests.storage.test_task_store import task_row

URL = "https://hooks.example.com/ymera"


@pytest.fixture
async def hooks(store: TaskStore) -> AsyncIterator[WebhookStore]:
    yield WebhookStore(store.engine)


async def finish(store: TaskStore, task: dict, status: str = "succeeded",
                 result: object = None) -> None:
    """Commit a task's terminal state the way the orchestrator does: update, event, notification."""
    now = utcnow()
    await store.apply(WriteBatch(
        task_updates=[{"id": task["id"], "status": status, "result": result,
                       "finished_at": now, "updated_at": now}],
        events=[{"task_id": task["id"], "kind": status, "at": now}],
        notifications=[task_notification(task["id"], task["tenant"], status,
                                         task["agent_type"], 1, now, result=result)]))


async def new_task(store: TaskStore, tenant: str = "acme", **columns: object) -> dict:
    row = task_row(tenant=tenant, **columns)
    await store.apply(WriteBatch(new_tasks=[row]))
    return row


async def test_a_terminal_state_commits_one_delivery_per_matching_subscription_of_its_tenant(
    store: TaskStore, hooks: WebhookStore,
) -> None:
    wanted, secret = await hooks.create_subscription("acme", URL, ["task.succeeded"])
    await hooks.create_subscription("acme", URL + "/failures", ["task.failed"])
    await hooks.create_subscription("acme", URL + "/other", ["task.*"], agent_type="calculator")
    await hooks.create_subscription("globex", URL + "/globex", ["*"])
    task = await new_task(store)

    await finish(store, task, result={"answer": 42})

    due = await hooks.due_deliveries(utcnow())
    assert [(d.subscription_id, d.url, d.event_kind) for d in due] == [
        (wanted.id, URL, "task.succeeded")]
    body = due[0].payload
    assert body["type"] == "task.succeeded"
    assert body["data"]["task_id"] == task["id"] and body["data"]["result"] == {"answer": 42}
    assert body["data"]["tenant"] == "acme" and due[0].tenant == "acme"
    assert due[0].id.startswith("msg_") and due[0].status == "pending"
    assert secret.startswith("whsec_") and Webhook(secret)  # a Standard Webhooks secret
    assert (await hooks.list_deliveries("globex"))[0] == []  # never another tenant's event


async def test_a_task_with_a_callback_url_gets_its_own_delivery_signed_with_the_tenant_secret(
    store: TaskStore, hooks: WebhookStore,
) -> None:
    task = await new_task(store, callback_url="https://client.example.com/done")
    other = await new_task(store)

    await finish(store, task, "failed")
    await finish(store, other)

    (delivery,) = await hooks.due_deliveries(utcnow())
    assert delivery.url == "https://client.example.com/done"
    assert delivery.subscription_id is None and delivery.event_kind == "task.failed"
    secrets = await hooks.signing_secrets("acme", None)
    assert secrets == [await hooks.callback_secret("acme")]
    assert secrets != [await hooks.callback_secret("globex")]


async def test_a_later_event_of_a_task_waits_for_the_earlier_one(
    store: TaskStore, hooks: WebhookStore,
) -> None:
    await hooks.create_subscription("acme", URL, ["task.*"])
    task = await new_task(store)
    await finish(store, task, "dead")
    await finish(store, task, "succeeded")  # requeued by an operator, then succeeded

    (first,) = await hooks.due_deliveries(utcnow())
    assert first.event_kind == "task.dead"
    assert await hooks.record_attempt(first.id, number=1, at=utcnow(), status_code=500,
                                      error=None, response_excerpt="oops", duration_ms=3.0,
                                      outcome="retry",
                                      next_attempt_at=utcnow() + timedelta(hours=1))
    assert await hooks.due_deliveries(utcnow()) == []  # the second waits behind the first

    await hooks.record_attempt(first.id, number=2, at=utcnow(), status_code=200, error=None,
                               response_excerpt="ok", duration_ms=2.0, outcome="delivered")
    (second,) = await hooks.due_deliveries(utcnow())
    assert second.event_kind == "task.succeeded"
    delivered, tries = await hooks.get_delivery("acme", first.id)
    assert delivered.status == "delivered" and delivered.attempts == 2
    assert [(t.number, t.status_code, t.response_excerpt) for t in tries] == [
        (1, 500, "oops"), (2, 200, "ok")]


async def test_a_stale_attempt_cannot_overwrite_a_redelivery(
    store: TaskStore, hooks: WebhookStore,
) -> None:
    await hooks.create_subscription("acme", URL, ["task.succeeded"])
    await finish(store, await new_task(store))
    (delivery,) = await hooks.due_deliveries(utcnow())
    await hooks.record_attempt(delivery.id, number=1, at=utcnow(), status_code=410, error=None,
                               response_excerpt=None, duration_ms=1.0, outcome="failed")

    again = await hooks.redeliver("acme", delivery.id)

    assert again.status == "pending" and again.id == delivery.id  # same webhook-id
    assert not await hooks.record_attempt(delivery.id, number=1, at=utcnow(), status_code=200,
                                          error=None, response_excerpt=None, duration_ms=1.0,
                                          outcome="delivered")
    assert await hooks.record_attempt(delivery.id, number=2, at=utcnow(), status_code=200,
                                      error=None, response_excerpt=None, duration_ms=1.0,
                                      outcome="delivered")
    with pytest.raises(NotFound):
        await hooks.redeliver("globex", delivery.id)


async def test_disabled_and_deleted_subscriptions_get_nothing_more(
    store: TaskStore, hooks: WebhookStore,
) -> None:
    paused, _ = await hooks.create_subscription("acme", URL, ["task.succeeded"])
    gone, _ = await hooks.create_subscription("acme", URL + "/gone", ["task.succeeded"])
    await finish(store, await new_task(store))
    await hooks.update_subscription("acme", paused.id, enabled=False)
    await hooks.delete_subscription("acme", gone.id)

    await finish(store, await new_task(store))

    pending = await hooks.list_deliveries("acme", status="pending")
    assert [d.subscription_id for d in pending[0]] == [paused.id]  # from before it was paused
    failed = (await hooks.list_deliveries("acme", status="failed"))[0]
    assert [(d.subscription_id, d.last_error) for d in failed] == [
        (gone.id, "subscription deleted")]


async def test_rotation_keeps_the_old_secret_signing_until_the_overlap_ends(
    hooks: WebhookStore,
) -> None:
    subscription, first = await hooks.create_subscription("acme", URL, ["run.*"])

    rotated, second = await hooks.rotate_secret("acme", subscription.id, overlap_s=3600)
    assert second != first and rotated.secret_rotated_at is not None
    assert await hooks.signing_secrets("acme", subscription.id) == [second, first]

    _, third = await hooks.rotate_secret("acme", subscription.id, overlap_s=0)
    assert await hooks.signing_secrets("acme", subscription.id) == [third]
    assert "secret" not in str(rotated.to_json()).lower().replace("secret_rotated_at", "") \
        .replace("previous_secret_expires_at", "")


async def test_bad_input_is_refused_naming_the_field_and_stores_nothing(
    hooks: WebhookStore,
) -> None:
    cases = [(("ftp://example.com/x", ["task.succeeded"]), "url"),
             (("https://user:pw@example.com/", ["task.succeeded"]), "url"),
             ((URL, ["task.finished"]), "events"), ((URL, []), "events")]
    for (url, events), field in cases:
        with pytest.raises(InvalidRequest) as caught:
            await hooks.create_subscription("acme", url, events)
        assert caught.value.details["field"] == field
    with pytest.raises(InvalidRequest):
        await hooks.rotate_secret("acme", "wh_x", overlap_s=-1)
    assert await hooks.list_subscriptions("acme") == []
    assert check_event_kinds("*") == EVENT_KINDS


async def test_a_tenant_reads_and_changes_only_its_own_subscriptions(hooks: WebhookStore) -> None:
    theirs, _ = await hooks.create_subscription("globex", URL, ["task.succeeded"])

    assert await hooks.list_subscriptions("acme") == []
    for action in (hooks.get_subscription("acme", theirs.id),
                   hooks.update_subscription("acme", theirs.id, enabled=False),
                   hooks.rotate_secret("acme", theirs.id),
                   hooks.delete_subscription("acme", theirs.id)):
        with pytest.raises(NotFound):
            await action
    assert (await hooks.get_subscription("globex", theirs.id)).enabled


async def test_a_run_finishing_and_a_step_awaiting_approval_reach_the_runs_subscribers(
    store: TaskStore, hooks: WebhookStore,
) -> None:
    from storage.workflow_records import NewStep, StepChange, StepStatus
    from storage.workflow_store import WorkflowStore

    workflows = WorkflowStore(store.engine)
    await hooks.create_subscription("acme", URL, ["run.*", "step.awaiting_approval"],
                                    workflow="report")
    await hooks.create_subscription("acme", URL + "/other", ["run.*"], workflow="billing")
    run, _ = await workflows.create_run("acme", "report", "1", {"name": "report"}, None,
                                        steps=[NewStep("sign_off", status=StepStatus.WAITING)])

    await workflows.apply_plan(run.id, [StepChange("sign_off", StepStatus.WAITING,
                                                   StepStatus.AWAITING_APPROVAL)])
    await workflows.set_run_status("acme", run.id, "failed", error={"code": "timeout"})

    deliveries, _ = await hooks.list_deliveries("acme")
    assert [(d.event_kind, d.url) for d in reversed(deliveries)] == [
        ("step.awaiting_approval", URL), ("run.failed", URL)]
    data = deliveries[0].payload["data"]
    assert data["run_id"] == run.id and data["workflow"] == "report"
    assert data["error"] == {"code": "timeout"} and data["tenant"] == "acme"
    assert deliveries[1].payload["data"]["step_id"] == "sign_off"
