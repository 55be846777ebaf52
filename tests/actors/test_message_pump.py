"""Messages that start work, end to end without a cluster: an in-process orchestrator on a real
SQLite database, the `listener` test type (it declares `on_message="task"`), and a
`MessagePump` over the same database. A message starts one task even when the pump runs twice
or crashes between submitting and marking; the reply links back; a message the pump cannot
start is refused once, with the reason; tenants never see each other's messages or tasks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from actors.agent import Agent
from actors.config import PoolConfig
from actors.message_pump import MessagePump, listening_types
from actors.orchestrator import Orchestrator
from storage.errors import InvalidRequest, StorageError
from storage.inbox import MAX_BODY_BYTES, InboxStore
from storage.messages import AgentSpec, InboxMessage, Task, TaskRequest, TaskStatus, utcnow
from tests.support.agents import LISTENER_PATH, TEST_AGENT_PATHS
from tests.support.inprocess_platform import inprocess_orchestrator


@pytest.fixture
async def orchestrator(tmp_path) -> AsyncIterator[Orchestrator]:
    async with inprocess_orchestrator(
            tmp_path, agent_modules=(*TEST_AGENT_PATHS, LISTENER_PATH),
            pools={"listener": PoolConfig(replicas=1)}) as running:
        yield running


@pytest.fixture
async def inbox(orchestrator: Orchestrator) -> AsyncIterator[InboxStore]:
    async with await InboxStore.open(orchestrator.config.database_url) as store:
        yield store


def pump_for(orchestrator: Orchestrator, inbox: InboxStore, **options: Any) -> MessagePump:
    async def get_tasks(task_ids: list[str]) -> dict[str, Task]:
        assert orchestrator.lifecycle is not None
        return await orchestrator.lifecycle.store.get_tasks(task_ids)

    return MessagePump(inbox, orchestrator.agent_types, orchestrator.submit_many, get_tasks,
                       **options)


@pytest.fixture
def pump(orchestrator: Orchestrator, inbox: InboxStore) -> MessagePump:
    return pump_for(orchestrator, inbox)


async def all_tasks(orchestrator: Orchestrator, tenant: str | None = None) -> list[Task]:
    return (await orchestrator.list_tasks(tenant=tenant, limit=100)).tasks


async def stored(inbox: InboxStore, message: InboxMessage) -> InboxMessage:
    messages, _ = await inbox.list(message.recipient, tenant=message.tenant,
                                   include_acked=True, limit=1000)
    return next(m for m in messages if m.id == message.id)


async def settle(pump: MessagePump, orchestrator: Orchestrator, message: InboxMessage,
                 inbox: InboxStore) -> InboxMessage:
    """Run the pump until `message` is settled (its reply posted, or refused)."""
    for _ in range(200):
        await pump.run_once()
        now = await stored(inbox, message)
        if now.replied_at is not None:
            return now
        if now.started_task_id is not None:
            await orchestrator.wait(now.started_task_id, 10)
    raise AssertionError(f"message {message.id} was never settled")


async def replies_in(inbox: InboxStore, recipient: str, tenant: str = "default"
                     ) -> list[InboxMessage]:
    return (await inbox.list(recipient, tenant=tenant, include_acked=True))[0]


async def test_a_message_starts_one_task_and_its_sender_gets_the_result(
    orchestrator: Orchestrator, inbox: InboxStore, pump: MessagePump,
) -> None:
    message = await inbox.post("listener", {"description": "echo one", "payload": {"n": 1}},
                               sender="sleeper", subject="please echo", tenant="acme")

    assert await pump.run_once() >= 1  # started (and answered, if the task was quick)
    await pump.run_once()  # a second round starts nothing more

    (task,) = await all_tasks(orchestrator)
    assert task.agent_type == "listener" and task.tenant == "acme"
    assert task.description == "echo one" and task.payload == {"n": 1}
    assert task.idempotency_key == f"message:{message.id}"
    started = await stored(inbox, message)
    assert started.started_task_id == task.id and started.acked_at is not None
    assert await inbox.unacked_count("listener", tenant="acme") == 0

    settled = await settle(pump, orchestrator, message, inbox)

    (reply,) = await replies_in(inbox, "sleeper", "acme")
    assert reply.in_reply_to == message.id and reply.task_id == task.id
    assert reply.sender == "listener" and reply.subject == "Re: please echo"
    assert reply.body == {"status": "succeeded", "result": {
        "echo": {"n": 1}, "description": "echo one", "tenant": "acme"}}
    assert settled.replied_at is not None
    assert await pump.run_once() == 0
    assert len(await replies_in(inbox, "sleeper", "acme")) == 1
    assert len(await all_tasks(orchestrator)) == 1


class MarkFailsOnce(InboxStore):
    """An inbox whose first `mark_started` fails, as a pump's crash right after it submitted."""

    failed = False

    async def mark_started(self, message_id: str, tenant: str, task_id: str) -> bool:
        if not self.failed:
            self.failed = True
            raise StorageError("the database went away")
        return await super().mark_started(message_id, tenant, task_id)


async def test_a_crash_between_submitting_and_marking_starts_the_task_once(
    orchestrator: Orchestrator, inbox: InboxStore,
) -> None:
    message = await inbox.post("listener", {"n": 1}, sender="sleeper")
    flaky_inbox = MarkFailsOnce(inbox.engine)
    pump = pump_for(orchestrator, flaky_inbox)

    with pytest.raises(StorageError):
        await pump.run_once()
    (submitted,) = await all_tasks(orchestrator)  # the task was submitted before the crash
    assert (await stored(inbox, message)).started_task_id is None

    reborn = pump_for(orchestrator, inbox)  # the pump after a restart
    await settle(reborn, orchestrator, message, inbox)

    assert [t.id for t in await all_tasks(orchestrator)] == [submitted.id]
    assert (await stored(inbox, message)).started_task_id == submitted.id
    (reply,) = await replies_in(inbox, "sleeper")
    assert reply.task_id == submitted.id and reply.body["status"] == "succeeded"


async def test_a_message_to_a_type_that_does_not_start_work_stays_in_its_inbox(
    orchestrator: Orchestrator, inbox: InboxStore, pump: MessagePump,
) -> None:
    message = await inbox.post("sleeper", {"payload": {"seconds": 0}}, sender="listener")

    assert await pump.run_once() == 0

    assert await all_tasks(orchestrator) == []
    kept = await stored(inbox, message)
    assert kept.acked_at is None and kept.started_task_id is None and kept.replied_at is None
    assert await inbox.unacked_count("sleeper") == 1


async def test_a_tenants_message_starts_its_own_task_and_only_it_sees_the_reply(
    orchestrator: Orchestrator, inbox: InboxStore, pump: MessagePump,
) -> None:
    from_acme = await inbox.post("listener", {"payload": {"canary": "acme"}},
                                 sender="sleeper", tenant="acme")
    from_globex = await inbox.post("listener", {"payload": {"canary": "globex"}},
                                   sender="sleeper", tenant="globex")

    await settle(pump, orchestrator, from_acme, inbox)
    await settle(pump, orchestrator, from_globex, inbox)

    (acme_task,) = await all_tasks(orchestrator, "acme")
    (globex_task,) = await all_tasks(orchestrator, "globex")
    assert acme_task.payload == {"canary": "acme"} and globex_task.payload == {
        "canary": "globex"}
    (acme_reply,) = await replies_in(inbox, "sleeper", "acme")
    (globex_reply,) = await replies_in(inbox, "sleeper", "globex")
    assert acme_reply.in_reply_to == from_acme.id and acme_reply.task_id == acme_task.id
    assert acme_reply.body["result"]["tenant"] == "acme"
    assert globex_reply.in_reply_to == from_globex.id
    assert "acme" not in str(globex_reply.body)
    assert await replies_in(inbox, "sleeper") == []  # the default tenant got nothing


async def test_a_failed_task_is_answered_with_its_error(
    orchestrator: Orchestrator, inbox: InboxStore, pump: MessagePump,
) -> None:
    message = await inbox.post("listener", {"bad": True}, sender="sleeper")

    await settle(pump, orchestrator, message, inbox)

    (reply,) = await replies_in(inbox, "sleeper")
    assert reply.body["status"] == "failed"
    assert reply.body["error"]["code"] == "invalid_task_input"
    assert reply.body["error"]["message"] == "this input is bad on purpose"
    assert "result" not in reply.body


async def test_a_result_too_large_for_an_inbox_is_left_to_the_task(
    orchestrator: Orchestrator, inbox: InboxStore, pump: MessagePump,
) -> None:
    message = await inbox.post("listener", {"size": MAX_BODY_BYTES}, sender="sleeper")

    settled = await settle(pump, orchestrator, message, inbox)

    (reply,) = await replies_in(inbox, "sleeper")
    assert reply.body == {"status": "succeeded", "result_truncated": True}
    assert settled.started_task_id is not None
    task = await orchestrator.get(settled.started_task_id)
    assert len(task.result["text"]) == MAX_BODY_BYTES


@pytest.mark.parametrize(("body", "expected"), [
    ({"explode": True}, "listener could not read the message: KeyError"),
    ({"refuse": True}, "this message is refused on purpose"),
    ({"undescribed": True}, "listener made a task request with no description"),
    ({"unknown_field": True}, "listener made a task request with unknown field 'colour'"),
    ({"payload": [1, 2]}, "the task's payload must be a JSON object"),
    ({"payload": {}, "description": "x" * 10_001}, "description is 10001 characters"),
    ({"payload": {}, "reply_to": "nobody"}, "reply_to 'nobody' is not a registered"),
])
async def test_a_message_that_can_start_no_task_is_refused_once_with_the_reason(
    orchestrator: Orchestrator, inbox: InboxStore, pump: MessagePump, body: Any,
    expected: str,
) -> None:
    refused = await inbox.post("listener", body, sender="sleeper", tenant="acme")
    good = await inbox.post("listener", {"n": 2}, sender="sleeper", tenant="acme")

    await pump.run_once()
    assert (await stored(inbox, good)).started_task_id is not None  # in the same round
    await settle(pump, orchestrator, good, inbox)
    assert await pump.run_once() == 0  # the refused one is not tried again

    (task,) = await all_tasks(orchestrator)
    assert task.payload == {"n": 2}
    settled = await stored(inbox, refused)
    assert settled.started_task_id is None
    assert settled.acked_at is not None and settled.replied_at is not None
    (reply,) = [r for r in await replies_in(inbox, "sleeper", "acme")
                if r.in_reply_to == refused.id]
    assert reply.body["status"] == "refused" and reply.task_id is None
    assert expected in reply.body["error"]["message"]
    assert (await stored(inbox, good)).started_task_id == task.id


async def test_a_message_its_type_leaves_for_a_reader_stays_and_hides_nothing(
    orchestrator: Orchestrator, inbox: InboxStore,
) -> None:
    pump = pump_for(orchestrator, inbox, batch=2)
    left = [await inbox.post("listener", {"leave": True}) for _ in range(3)]
    wanted = await inbox.post("listener", {"n": 1})

    for _ in range(3):
        await pump.run_once()

    (task,) = await all_tasks(orchestrator)
    assert (await stored(inbox, wanted)).started_task_id == task.id
    for message in left:
        kept = await stored(inbox, message)
        assert kept.acked_at is None and kept.started_task_id is None
    assert await inbox.unacked_count("listener") == 3


async def test_replies_go_to_the_named_type_or_the_sender_type_or_nowhere(
    orchestrator: Orchestrator, inbox: InboxStore, pump: MessagePump,
) -> None:
    to_named = await inbox.post("listener", {"payload": {"n": 1}, "reply_to": "flaky"},
                                sender="sleeper")
    from_a_person = await inbox.post("listener", {"n": 2}, sender="alice@example.com")
    unsigned = await inbox.post("listener", {"n": 3})

    for message in (to_named, from_a_person, unsigned):
        await settle(pump, orchestrator, message, inbox)

    (named_reply,) = await replies_in(inbox, "flaky")
    assert named_reply.in_reply_to == to_named.id
    assert await replies_in(inbox, "sleeper") == []
    for message in (from_a_person, unsigned):
        settled = await stored(inbox, message)
        assert settled.replied_at is not None and settled.started_task_id is not None
        task = await orchestrator.get(settled.started_task_id)
        assert task.status is TaskStatus.SUCCEEDED  # the poster reads the outcome here


async def test_a_full_tenant_queue_holds_its_messages_and_lets_others_start(
    tmp_path,
) -> None:
    async with inprocess_orchestrator(
            tmp_path, agent_modules=(*TEST_AGENT_PATHS, LISTENER_PATH),
            pools={"listener": PoolConfig(replicas=0)}, tenant_queue_max=1,
            queue_max=100) as orchestrator:
        async with await InboxStore.open(orchestrator.config.database_url) as inbox:
            pump = pump_for(orchestrator, inbox)
            first = await inbox.post("listener", {"n": 1}, tenant="acme")
            held = await inbox.post("listener", {"n": 2}, tenant="acme")

            assert await pump.run_once() == 1  # acme's quota takes one of its two
            other = await inbox.post("listener", {"n": 3}, tenant="globex")
            assert await pump.run_once() == 1  # globex's starts; acme's second still waits

            (acme_task,) = await all_tasks(orchestrator, "acme")
            assert (await stored(inbox, first)).started_task_id == acme_task.id
            assert (await stored(inbox, other)).started_task_id is not None
            waiting = await stored(inbox, held)
            assert waiting.started_task_id is None and waiting.acked_at is None

            await orchestrator.scale("listener", 1)  # acme's task runs: its quota frees up
            await orchestrator.wait(acme_task.id, 10)
            assert await pump.run_once() >= 1
            assert (await stored(inbox, held)).started_task_id is not None


def test_a_type_declaring_an_unknown_on_message_is_refused() -> None:
    class Confused(Agent):
        spec = AgentSpec(name="confused", description="?", capabilities=("x",),
                         examples=("x",), on_message="workflow")

    with pytest.raises(InvalidRequest, match="on_message='workflow'"):
        listening_types({"confused": Confused})


def test_the_default_mapping_reads_an_envelope_or_an_object_and_leaves_the_rest() -> None:
    def message(body: Any, **fields: Any) -> InboxMessage:
        return InboxMessage(id="m" * 32, recipient="listener", body=body,
                            created_at=utcnow(), **fields)

    assert Agent.message_task(message({"payload": {"a": 1}, "description": "do a"})) == {
        "description": "do a", "payload": {"a": 1}}
    assert Agent.message_task(message({"a": 1}, subject="about a")) == {
        "description": "about a", "payload": {"a": 1}}
    assert Agent.message_task(message({"a": 1}, sender="sleeper")) == {
        "description": "message from sleeper", "payload": {"a": 1}}
    assert Agent.message_task(message("plain text")) is None
    assert Agent.message_task(message([1, 2])) is None


async def test_many_messages_each_start_one_task_and_get_one_reply(
    orchestrator: Orchestrator, inbox: InboxStore,
) -> None:
    pump = pump_for(orchestrator, inbox, batch=7)  # several pages of each kind
    messages = [await inbox.post("listener", {"n": n}, sender="sleeper") for n in range(20)]

    for message in messages:
        await settle(pump, orchestrator, message, inbox)

    assert len(await all_tasks(orchestrator)) == 20
    replies = await replies_in(inbox, "sleeper")
    assert sorted(r.in_reply_to for r in replies) == sorted(m.id for m in messages)
    assert len({r.task_id for r in replies}) == 20


async def test_while_the_platform_accepts_no_tasks_messages_wait_and_replies_go_out(
    orchestrator: Orchestrator, inbox: InboxStore, pump: MessagePump,
) -> None:
    answered = await inbox.post("listener", {"n": 1}, sender="sleeper")
    task_id = await orchestrator.submit(TaskRequest("n", {"n": 1}, "listener"))
    await inbox.mark_started(answered.id, "default", task_id)  # started before the drain
    await orchestrator.wait(task_id, 10)
    waiting = await inbox.post("listener", {"n": 2}, sender="sleeper")

    orchestrator.accepting = False  # draining: submissions are PlatformUnavailable
    try:
        assert await pump.run_once() == 1  # the reply, and nothing else
    finally:
        orchestrator.accepting = True

    kept = await stored(inbox, waiting)
    assert kept.started_task_id is None and kept.acked_at is None and kept.replied_at is None
    assert [r.in_reply_to for r in await replies_in(inbox, "sleeper")] == [answered.id]
    await pump.run_once()
    assert (await stored(inbox, waiting)).started_task_id is not None
