"""Webhooks over HTTP: a tenant's subscriptions, their deliveries, and the secret that signs its
task callbacks.

    GET    /webhooks                                 the tenant's subscriptions
    POST   /webhooks                                 subscribe a URL (the secret, shown once)
    GET    /webhooks/{subscription_id}               one subscription
    PATCH  /webhooks/{subscription_id}               change the given fields (enable, disable…)
    DELETE /webhooks/{subscription_id}               unsubscribe; its pending deliveries fail
    POST   /webhooks/{subscription_id}/rotate-secret a new secret (shown once), old one overlaps
    GET    /webhooks/deliveries                      deliveries, newest first, filtered
    GET    /webhooks/deliveries/{delivery_id}        one delivery with its attempts
    POST   /webhooks/deliveries/{delivery_id}/redeliver   send it again
    GET    /webhooks/callback-secret                 the secret that signs task callbacks
    POST   /webhooks/callback-secret                 rotate it (the old one overlaps)

Guarantees: the tenant is always the caller's (from the credentials, never the request), so
another tenant's subscription or delivery answers exactly like a missing one (404) and is left
as it was; reads take `webhooks:read` (operators and up), changes and secrets take
`webhooks:manage` (tenant administrators); a secret appears only in the answer that made it
(create, rotate, callback secret), never in a listing or read; a bad event kind, a URL that is
not http(s) or that resolves to a private address (unless the operator allows it) is 400
`invalid_request` naming the field, and nothing is stored; every change and every secret read
or rotation is written to the tenant's audit log (without the secret).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Body, Depends, Query, Request

from serve_apps.routes.access import Caller, audit, authorize, services
from serve_apps.webhook_schemas import RotateBody, WebhookBody, WebhookChanges

router = APIRouter(tags=["webhooks"], dependencies=[Depends(authorize)])

DELIVERY_STATUS_PATTERN: Final = "^(pending|delivered|failed)$"
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=200)]
Id = Annotated[str | None, Query(min_length=1, max_length=64)]
Rotation = Annotated[RotateBody | None, Body()]


@router.get("/webhooks", summary="Your tenant's webhook subscriptions")
async def list_webhooks(request: Request, caller: Caller) -> dict[str, Any]:
    return await services(request).port.list_webhooks(caller.tenant)


@router.post("/webhooks", status_code=201,
             summary="Subscribe a URL to events (its signing secret is shown this once)")
async def create_webhook(body: WebhookBody, request: Request,
                         caller: Caller) -> dict[str, Any]:
    created = await services(request).port.create_webhook(
        caller.tenant, body.url, body.events, agent_type=body.agent_type,
        workflow=body.workflow, description=body.description, created_by=caller.subject,
        enabled=body.enabled)
    await audit(request, caller.tenant, caller.subject, "webhook_created",
                target=created["id"], details={"url": created["url"],
                                               "events": created["events"]})
    return created


@router.get("/webhooks/deliveries", summary="Deliveries, newest first, filtered")
async def list_deliveries(request: Request, caller: Caller, subscription_id: Id = None,
                          status: Annotated[str | None,
                                            Query(pattern=DELIVERY_STATUS_PATTERN)] = None,
                          task_id: Id = None,
                          event_kind: Annotated[str | None, Query(max_length=64)] = None,
                          limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
    return await services(request).port.webhook_deliveries(
        caller.tenant, subscription_id=subscription_id, status=status, task_id=task_id,
        event_kind=event_kind, limit=limit, cursor=cursor)


@router.get("/webhooks/deliveries/{delivery_id}",
            summary="One delivery with its attempts and the responses they got")
async def get_delivery(delivery_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    return await services(request).port.webhook_delivery(caller.tenant, delivery_id)


@router.post("/webhooks/deliveries/{delivery_id}/redeliver",
             summary="Send a delivery again (same webhook-id, a fresh retry period)")
async def redeliver(delivery_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    delivery = await services(request).port.redeliver_webhook(caller.tenant, delivery_id)
    await audit(request, caller.tenant, caller.subject, "webhook_redelivered",
                target=delivery_id)
    return delivery


@router.get("/webhooks/callback-secret",
            summary="The secret that signs your tenant's task callbacks")
async def callback_secret(request: Request, caller: Caller) -> dict[str, Any]:
    secret = await services(request).port.callback_secret(caller.tenant)
    await audit(request, caller.tenant, caller.subject, "callback_secret_read")
    return secret


@router.post("/webhooks/callback-secret",
             summary="Rotate the callback secret (the old one signs too while it overlaps)")
async def rotate_callback_secret(request: Request, caller: Caller,
                                 body: Rotation = None) -> dict[str, Any]:
    overlap_s = (body or RotateBody()).overlap_s
    secret = await services(request).port.callback_secret(caller.tenant, True, overlap_s)
    await audit(request, caller.tenant, caller.subject, "callback_secret_rotated",
                details={"overlap_s": overlap_s})
    return secret


@router.get("/webhooks/{subscription_id}", summary="One webhook subscription")
async def get_webhook(subscription_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    return await services(request).port.get_webhook(caller.tenant, subscription_id)


@router.patch("/webhooks/{subscription_id}",
              summary="Change a subscription's given fields (enable, disable, events, URL…)")
async def update_webhook(subscription_id: str, body: WebhookChanges, request: Request,
                         caller: Caller) -> dict[str, Any]:
    changes = body.changes()
    updated = await services(request).port.update_webhook(caller.tenant, subscription_id,
                                                           **changes)
    await audit(request, caller.tenant, caller.subject, "webhook_updated",
                target=subscription_id, details=changes)
    return updated


@router.delete("/webhooks/{subscription_id}",
               summary="Unsubscribe (its pending deliveries are marked failed)")
async def delete_webhook(subscription_id: str, request: Request,
                         caller: Caller) -> dict[str, Any]:
    deleted = await services(request).port.delete_webhook(caller.tenant, subscription_id)
    await audit(request, caller.tenant, caller.subject, "webhook_deleted",
                target=subscription_id)
    return deleted


@router.post("/webhooks/{subscription_id}/rotate-secret",
             summary="A new signing secret (shown once); the old one overlaps for a while")
async def rotate_secret(subscription_id: str, request: Request, caller: Caller,
                        body: Rotation = None) -> dict[str, Any]:
    overlap_s = (body or RotateBody()).overlap_s
    rotated = await services(request).port.rotate_webhook_secret(caller.tenant,
                                                                 subscription_id, overlap_s)
    await audit(request, caller.tenant, caller.subject, "webhook_secret_rotated",
                target=subscription_id, details={"overlap_s": overlap_s})
    return rotated
