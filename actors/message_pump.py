"""Messages that start work: a message to an agent type that declares
`AgentSpec(on_message="task")` starts a task of that type, and its sender gets the outcome as a
reply.

The orchestrator runs `MessagePump.run_once` every half second. One round:

1. Start: the unacknowledged messages to those types that started nothing and are not replies,
   oldest first, across tenants. Each is mapped by its type's `Agent.message_task` and
   submitted as a task of that type, in the message's tenant, with the idempotency key
   `message:<message id>`; then the message records the task and is acknowledged. A pump
   that crashes between the two submits again at its next round, and the key gives back the
   same task: a message starts one task, ever.
2. Reply: for every started message whose task has finished, one reply with the task's
   outcome, `{"status", "result"}` or `{"status", "error"}` (a result too large for an inbox,
   `MAX_BODY_BYTES`, is left out with `"result_truncated": true`; the task holds it),
   linked to the message (`in_reply_to`) and the task (`task_id`), from the type that ran it.

Where a reply goes: to the type an envelope body names in "reply_to" (`{"payload": ...,
"reply_to": "learning"}`, which must be a registered type), else to the sender when the sender
is a registered type (a message posted by the `communication` agent is answered in the
`communication` inbox), else nowhere: a caller who posted over HTTP reads the outcome from the
task the message records (`started_task_id`). Either way the message records `replied_at`
once its reply is settled, and the reply is posted in the same transaction, so never twice.

A message that can start no task is refused, once, and never retried: its mapping raised, or
returned something that is not a task request, or the orchestrator refused the request
(`InvalidRequest`). It is acknowledged with no task (`started_task_id` None, `replied_at` set)
and the reply, when there is an address, is `{"status": "refused", "error": {"code",
"message", "details"}}`. A mapping that returns None leaves the message for a reader: it stays
unacknowledged and is looked at again only when a scan comes round to it.

Back-pressure: a tenant whose tasks do not fit the queue (`QueueFull`) keeps its messages for a
later round; the other tenants' messages start. While the orchestrator accepts no tasks
(draining, storage out: `PlatformUnavailable`) every message waits, and replies still go out.
Each round reads at most `batch` messages of each kind; scans go on from where the last round
stopped, so messages left for a reader or tasks still running never hide newer ones. Storage
trouble in the pump's own reads and writes fails the round (the caller logs it); whatever it
did not finish, a later round does.

The reply reports the first finished state the pump sees: a task dead-lettered and later
requeued was answered when it died; its new outcome is on the task.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from actors.agent import Agent
from actors.errors import PlatformUnavailable, QueueFull
from storage.errors import InvalidRequest, YmeraError
from storage.inbox import MAX_BODY_BYTES, InboxStore, Position, body_size
from storage.messages import InboxMessage, Task, TaskRequest, TaskStatus

log = logging.getLogger("ymera.message_pump")

ON_MESSAGE_VALUES = (None, "task")
REQUEST_FIELDS = ("description", "payload", "priority", "timeout_s", "max_attempts")
SUBJECT_LIMIT = 200
REFUSED = "refused"

Submit = Callable[[list[TaskRequest]], Awaitable[list[str]]]
GetTasks = Callable[[list[str]], Awaitable[dict[str, Task]]]


def idempotency_key(message: InboxMessage) -> str:
    """The key of the task a message starts: the same message always names the same task."""
    return f"message:{message.id}"


def listening_types(agent_types: Mapping[str, type[Agent]]) -> dict[str, type[Agent]]:
    """The types that start work from messages; `InvalidRequest` for a type declaring an
    `on_message` other than None or "task"."""
    listening = {}
    for name, agent_class in agent_types.items():
        on_message = agent_class.spec.on_message
        if on_message not in ON_MESSAGE_VALUES:
            raise InvalidRequest(f"agent type {name!r} declares on_message={on_message!r}; "
                                 "it must be None or \"task\"", {"agent_type": name})
        if on_message == "task":
            listening[name] = agent_class
    return listening


class MessagePump:
    """Starts tasks from the messages to the types that declare `on_message="task"`, and
    replies to their senders with the outcomes."""

    def __init__(self, inbox: InboxStore, agent_types: Mapping[str, type[Agent]],
                 submit: Submit, get_tasks: GetTasks, *, batch: int = 100) -> None:
        self.inbox = inbox
        self.agent_types = dict(agent_types)
        self.listening = listening_types(agent_types)
        self.submit = submit
        self.get_tasks = get_tasks
        self.batch = batch
        self._start_after: Position | None = None
        self._reply_after: Position | None = None

    async def run_once(self) -> int:
        """One round; how many messages it started, refused or replied to."""
        if not self.listening:
            return 0
        return await self.start_messages() + await self.settle_replies()

    # ----------------------------------------------------------------- starting

    async def start_messages(self) -> int:
        """Start (or refuse) the next messages waiting; how many."""
        messages = await self.inbox.to_start(self.listening, self.batch, self._start_after)
        self._start_after = _next_position(messages, self.batch)
        done = 0
        by_tenant: dict[str, list[tuple[InboxMessage, TaskRequest]]] = {}
        for message in messages:
            try:
                request = self.task_request(message)
            except YmeraError as exc:
                done += await self._refuse(message, exc)
                continue
            if request is not None:
                by_tenant.setdefault(message.tenant, []).append((message, request))
        for pending in by_tenant.values():
            done += await self._start(pending)
        return done

    def task_request(self, message: InboxMessage) -> TaskRequest | None:
        """The task `message` starts, None to leave it for a reader; a `YmeraError`
        (`InvalidRequest`, or the agent's `InvalidTaskInput`) when it can start none."""
        self.reply_address(message)  # a bad "reply_to" refuses the message up front
        agent_class = self.listening[message.recipient]
        try:
            mapped = agent_class.message_task(message)
        except YmeraError:
            raise
        except Exception as exc:
            raise InvalidRequest(f"{message.recipient} could not read the message: "
                                 f"{type(exc).__name__}: {exc}") from exc
        if mapped is None:
            return None
        if not isinstance(mapped, dict):
            raise InvalidRequest(f"{message.recipient} made {type(mapped).__name__} of the "
                                 "message, not a task request")
        unknown = sorted(set(mapped) - set(REQUEST_FIELDS))
        if unknown:
            raise InvalidRequest(f"{message.recipient} made a task request with unknown "
                                 f"field {unknown[0]!r}; known: {', '.join(REQUEST_FIELDS)}",
                                 {"field": unknown[0]})
        if "description" not in mapped:
            raise InvalidRequest(f"{message.recipient} made a task request with no description",
                                 {"field": "description"})
        if not isinstance(mapped.get("payload"), dict):
            raise InvalidRequest("the task's payload must be a JSON object", {"field": "payload"})
        return TaskRequest(agent_type=message.recipient, tenant=message.tenant,
                           idempotency_key=idempotency_key(message), **mapped)

    async def _start(self, pending: list[tuple[InboxMessage, TaskRequest]]) -> int:
        """Submit one tenant's requests together; when they are refused or do not fit, one
        at a time, oldest first, up to the first that does not fit (`QueueFull`)."""
        try:
            ids = await self.submit([request for _, request in pending])
        except PlatformUnavailable as exc:
            self._hold(pending[0][0], exc)
            return 0
        except InvalidRequest as exc:
            if len(pending) == 1:
                return await self._refuse(pending[0][0], exc)
        except QueueFull as exc:
            if len(pending) == 1:
                self._hold(pending[0][0], exc)
                return 0
        else:
            for (message, _), task_id in zip(pending, ids):
                await self.inbox.mark_started(message.id, message.tenant, task_id)
            return len(pending)
        done = 0
        for message, request in pending:
            try:
                (task_id,) = await self.submit([request])
            except InvalidRequest as exc:
                done += await self._refuse(message, exc)
                continue
            except (QueueFull, PlatformUnavailable) as exc:
                self._hold(message, exc)
                break
            await self.inbox.mark_started(message.id, message.tenant, task_id)
            done += 1
        return done

    def _hold(self, message: InboxMessage, exc: YmeraError) -> None:
        """`message` and its tenant's later ones wait: for room in the queue, or for a
        platform that accepts tasks again (draining, storage out)."""
        self._start_after = None  # the next round starts with the ones that wait
        log.info("messages of tenant %s wait: %s", message.tenant, exc)

    async def _refuse(self, message: InboxMessage, exc: YmeraError) -> int:
        details = json.loads(json.dumps(exc.details, default=str))  # plain JSON, whatever came
        error = {"code": exc.code, "message": exc.message, "details": details}
        log.info("message %s to %s (tenant %s) starts no task: %s", message.id,
                 message.recipient, message.tenant, exc.message)
        await self._reply(message, {"status": REFUSED, "error": error}, task_id=None)
        return 1

    # ----------------------------------------------------------------- replying

    async def settle_replies(self) -> int:
        """Reply for the next started messages whose tasks have finished; how many."""
        messages = await self.inbox.started_unreplied(self.batch, self._reply_after)
        self._reply_after = _next_position(messages, self.batch)
        if not messages:
            return 0
        tasks = await self.get_tasks([m.started_task_id for m in messages
                                      if m.started_task_id is not None])
        done = 0
        for message in messages:
            assert message.started_task_id is not None
            task = tasks.get(message.started_task_id)
            if task is not None and task.tenant != message.tenant:
                task = None  # never another tenant's outcome
            if task is None:
                error = {"code": "not_found", "message": f"task {message.started_task_id} "
                         "no longer exists", "details": {}}
                await self._reply(message, {"status": "unknown", "error": error},
                                  task_id=message.started_task_id)
                done += 1
            elif task.status.is_terminal:
                await self._reply(message, outcome(task), task_id=task.id)
                done += 1
        return done

    def reply_address(self, message: InboxMessage) -> str | None:
        """The inbox a reply to `message` goes to (see the module's docstring); None: no
        reply. `InvalidRequest` for an envelope's "reply_to" that names no registered type."""
        body = message.body
        if isinstance(body, dict) and "payload" in body and "reply_to" in body:
            named = body["reply_to"]
            if not isinstance(named, str) or named not in self.agent_types:
                raise InvalidRequest(f"reply_to {named!r} is not a registered agent type",
                                     {"field": "reply_to"})
            return named
        if message.sender is not None and message.sender in self.agent_types:
            return message.sender
        return None

    async def _reply(self, message: InboxMessage, body: dict[str, Any],
                     task_id: str | None) -> None:
        try:
            address = self.reply_address(message)
        except InvalidRequest:
            address = message.sender if message.sender in self.agent_types else None
        subject = None
        if message.subject:
            subject = f"Re: {message.subject}"[:SUBJECT_LIMIT]
        await self.inbox.mark_replied(message.id, message.tenant, reply_to=address, body=body,
                                      sender=message.recipient, task_id=task_id,
                                      subject=subject)


def outcome(task: Task) -> dict[str, Any]:
    """A reply's body for a finished task: its status and its result, or its error."""
    if task.status is not TaskStatus.SUCCEEDED:
        return {"status": task.status.value,
                "error": task.error.to_json() if task.error is not None else None}
    body = {"status": task.status.value, "result": task.result}
    if body_size(body) > MAX_BODY_BYTES:
        return {"status": task.status.value, "result_truncated": True}
    return body


def _next_position(messages: list[InboxMessage], batch: int) -> Position | None:
    """Where the next scan goes on: after the last message of a full page; from the start
    after a short one."""
    if len(messages) < batch:
        return None
    last = messages[-1]
    return last.created_at, last.id
