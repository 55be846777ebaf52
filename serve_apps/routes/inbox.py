"""Agent inboxes over HTTP: read an agent type's messages, leave one, acknowledge one.

    GET  /inbox/{agent_type}                     the tenant's messages to it, oldest first
    POST /inbox/{agent_type}                     leave a message (an agent type that declares
                                                 `on_message` starts a task from it)
    POST /inbox/{agent_type}/{message_id}/ack    mark a message read

Guarantees: the tenant is always the caller's, so another tenant's message answers exactly like
a missing one (404) and stays unread; reading takes `inbox:read` (viewers and up), sending and
acknowledging take `inbox:write` (submitters and up); a message is stored with its sender, the
caller (`user:<id>` or `key:<id>`), and is committed when the answer (201) is sent; a body that
is null, not plain JSON or too large is 400 naming the field, and nothing is stored;
acknowledging twice keeps the first time.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from serve_apps.routes.access import Caller, authorize, services
from serve_apps.webhook_schemas import MessageBody
from storage.inbox import MAX_PAGE
from storage.storable import readable

router = APIRouter(tags=["inbox"], dependencies=[Depends(authorize)])

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Cursor = Annotated[str | None, Query(max_length=200)]


def message_json(message: Any) -> dict[str, Any]:
    shown = message.to_json()
    shown["body"] = readable(shown.get("body"))
    return shown


@router.get("/inbox/{agent_type}", summary="Your tenant's messages to an agent type")
async def list_messages(agent_type: str, request: Request, caller: Caller,
                        include_acked: bool = False, limit: Limit = 50,
                        cursor: Cursor = None) -> dict[str, Any]:
    page = await services(request).port.inbox(agent_type, include_acked, limit, cursor,
                                               caller.tenant)
    return {"messages": [message_json(m) for m in page["messages"]],
            "next_cursor": page["next_cursor"]}


@router.post("/inbox/{agent_type}", status_code=201,
             summary="Leave a message in an agent type's inbox")
async def send_message(agent_type: str, body: MessageBody, request: Request,
                       caller: Caller) -> dict[str, Any]:
    message = await services(request).port.post_message(
        caller.tenant, agent_type, body.body, sender=caller.subject, subject=body.subject)
    return message_json(message)


@router.post("/inbox/{agent_type}/{message_id}/ack", summary="Mark a message read")
async def ack_message(agent_type: str, message_id: str, request: Request,
                      caller: Caller) -> dict[str, Any]:
    message = await services(request).port.ack_inbox_message(caller.tenant, agent_type,
                                                            message_id)
    return message_json(message)
