"""The orchestrator's side of events out: a tenant's webhook subscriptions, their deliveries,
the secret that signs its task callbacks, and messages a caller leaves in an agent's inbox.

    create_webhook(tenant, url, events, ...)      a subscription and its secret (shown once)
    list_webhooks / get_webhook / update_webhook / delete_webhook / rotate_webhook_secret
    webhook_deliveries(tenant, filters...)        deliveries, newest first, a page at a time
    webhook_delivery(tenant, id)                  one delivery with its attempts
    redeliver_webhook(tenant, id)                 send a delivery again (a fresh retry period)
    callback_secret(tenant, rotate=False)         the secret that signs the tenant's callbacks
    post_message(tenant, agent_type, body, ...)   a message to an agent type's inbox
    ack_inbox_message(tenant, agent_type, id)     mark one message of that inbox read

Guarantees:
- every operation names one tenant; another tenant's subscription, delivery or message is
  `NotFound`, exactly like one that does not exist, and nothing of it changes;
- a URL is checked for syntax and then resolved, at subscription time and whenever it changes:
  one that resolves to a private, loopback or otherwise non-public address is refused
  (`InvalidRequest` naming the field `url`) unless the operator allows private networks or
  lists the address's network in YMERA_WEBHOOK_ALLOWED_NETWORKS; a refused request stores
  nothing (the delivery actor checks again at every delivery: DNS can change);
- a secret leaves storage only in the answer to the call that made it (create, rotate,
  callback secret); listings and reads never carry one;
- the webhook store is opened on the orchestrator's engine on first use (nothing to rebuild).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final


from actors.errors import InvalidTaskInput, RetryableAgentError, storage_trouble_unavailable
from actors.webhook_sender import DestinationPolicy, check_destination
from storage.errors import InvalidRequest, NotFound
from storage.example_store import check_tenant
from storage.messages import AGENT_TYPE_NAME
from storage.webhook_records import (
    DELIVERY_STATUSES, EVENT_KINDS, check_event_kinds, check_webhook_url,
)
from storage.webhook_store import WebhookStore

if TYPE_CHECKING:
    from actors.agents.webhook_addresses import AddressLookup
    from actors.config import OrchestratorConfig
    from actors.lifecycle import Lifecycle
    from storage.inbox import InboxStore
    from storage.messages import InboxMessage

DEFAULT_OVERLAP_S: Final = 86400.0
UPDATABLE_FIELDS: Final = ("url", "events", "enabled", "agent_type", "workflow", "description")


class WebhookAdministration:
    """Webhook and inbox operations of `actors.orchestrator.Orchestrator` (a mixin over its
    `config`, its lifecycle's engine and its inbox store)."""

    config: OrchestratorConfig
    agent_types: dict[str, Any]
    _webhook_store: WebhookStore | None = None
    webhook_address_lookup: AddressLookup | None = None
    """How a URL's host is resolved (default: the event loop's getaddrinfo; tests stub it)."""

    if TYPE_CHECKING:
        async def _wait_ready(self) -> Lifecycle: ...

        async def _inbox(self) -> InboxStore: ...

    async def _webhooks(self, tenant: str) -> WebhookStore:
        """The webhook store, once `tenant` is a tenant's name."""
        check_tenant(tenant)
        lifecycle = await self._wait_ready()
        if self._webhook_store is None:
            self._webhook_store = WebhookStore(lifecycle.store.engine)
        return self._webhook_store

    # ------------------------------------------------------------------ where a URL may go

    async def checked_webhook_url(self, url: object, field: str = "url") -> str:
        """`url` if it is a well-formed http(s) URL whose host resolves only to addresses a
        webhook may go to (`config.webhooks`, the delivery actor's own guard); `InvalidRequest`
        naming `field` otherwise. A DNS failure that may pass is let through: every delivery
        checks again."""
        checked = check_webhook_url(url, field)
        settings = self.config.webhooks
        policy = DestinationPolicy.from_settings(settings.allow_private_networks,
                                                 settings.allowed_networks,
                                                 self.webhook_address_lookup)
        try:
            await check_destination(checked, policy)
        except RetryableAgentError:
            pass
        except InvalidTaskInput as exc:
            raise InvalidRequest(exc.message, {**exc.details, "field": field}) from None
        return checked

    def _check_agent_type_filter(self, agent_type: str | None) -> None:
        if agent_type is not None and agent_type not in self.agent_types:
            raise InvalidRequest(f"no agent type {agent_type!r} to filter on; known types: "
                                 f"{', '.join(sorted(self.agent_types))}",
                                 {"field": "agent_type"})

    # ------------------------------------------------------------------ subscriptions

    @storage_trouble_unavailable
    async def create_webhook(self, tenant: str, url: str, events: list[str] | tuple[str, ...],
                             *, agent_type: str | None = None, workflow: str | None = None,
                             description: str | None = None, created_by: str | None = None,
                             enabled: bool = True) -> dict[str, Any]:
        """Subscribe `url` to `tenant`'s `events` (optionally of one agent type or workflow):
        the subscription and its signing `secret`, which is shown this once."""
        kinds = check_event_kinds(events)
        self._check_agent_type_filter(agent_type)
        checked = await self.checked_webhook_url(url)
        subscription, secret = await (await self._webhooks(tenant)).create_subscription(
            tenant, checked, kinds, agent_type=agent_type, workflow=workflow,
            description=description, created_by=created_by, enabled=enabled)
        return {**subscription.to_json(), "secret": secret}

    @storage_trouble_unavailable
    async def list_webhooks(self, tenant: str) -> dict[str, Any]:
        """`tenant`'s subscriptions (never their secrets)."""
        subscriptions = await (await self._webhooks(tenant)).list_subscriptions(tenant)
        return {"webhooks": [subscription.to_json() for subscription in subscriptions]}

    @storage_trouble_unavailable
    async def get_webhook(self, tenant: str, subscription_id: str) -> dict[str, Any]:
        """One of `tenant`'s subscriptions; `NotFound` for another tenant's."""
        return (await (await self._webhooks(tenant)).get_subscription(
            tenant, subscription_id)).to_json()

    @storage_trouble_unavailable
    async def update_webhook(self, tenant: str, subscription_id: str,
                             **changes: Any) -> dict[str, Any]:
        """Change only the given fields of a subscription (`url`, `events`, `enabled`,
        `agent_type`, `workflow`, `description`); a new URL is checked like a new one."""
        unknown = sorted(set(changes) - set(UPDATABLE_FIELDS))
        if unknown:
            raise InvalidRequest(f"a subscription has no field {unknown[0]!r} to change; "
                                 f"fields: {', '.join(UPDATABLE_FIELDS)}",
                                 {"field": unknown[0]})
        if not changes:
            raise InvalidRequest("give at least one field to change: "
                                 f"{', '.join(UPDATABLE_FIELDS)}", {"field": "body"})
        if "enabled" in changes and not isinstance(changes["enabled"], bool):
            raise InvalidRequest("enabled must be true or false", {"field": "enabled"})
        if changes.get("agent_type") is not None:
            self._check_agent_type_filter(changes["agent_type"])
        if "events" in changes:
            changes["events"] = check_event_kinds(changes["events"])
        store = await self._webhooks(tenant)
        await store.get_subscription(tenant, subscription_id)  # NotFound before any lookup
        if "url" in changes:
            changes["url"] = await self.checked_webhook_url(changes["url"])
        return (await store.update_subscription(tenant, subscription_id, **changes)).to_json()

    @storage_trouble_unavailable
    async def delete_webhook(self, tenant: str, subscription_id: str) -> dict[str, Any]:
        """Delete a subscription; its pending deliveries become failed."""
        await (await self._webhooks(tenant)).delete_subscription(tenant, subscription_id)
        return {"id": subscription_id, "deleted": True}

    @storage_trouble_unavailable
    async def rotate_webhook_secret(self, tenant: str, subscription_id: str,
                                    overlap_s: float = DEFAULT_OVERLAP_S) -> dict[str, Any]:
        """A new secret for a subscription (shown this once); deliveries carry a signature by
        the old one too for `overlap_s` seconds."""
        subscription, secret = await (await self._webhooks(tenant)).rotate_secret(
            tenant, subscription_id, overlap_s)
        return {**subscription.to_json(), "secret": secret}

    # ------------------------------------------------------------------ deliveries

    @storage_trouble_unavailable
    async def webhook_deliveries(self, tenant: str, *, subscription_id: str | None = None,
                                 status: str | None = None, task_id: str | None = None,
                                 event_kind: str | None = None, limit: int = 50,
                                 cursor: str | None = None) -> dict[str, Any]:
        """`tenant`'s deliveries, newest first, filtered: {"deliveries", "next_cursor"}."""
        if status is not None and status not in DELIVERY_STATUSES:
            raise InvalidRequest(f"status must be one of {', '.join(DELIVERY_STATUSES)}, "
                                 f"not {status!r}", {"field": "status"})
        if event_kind is not None and event_kind not in EVENT_KINDS:
            raise InvalidRequest(f"event_kind must be one of {', '.join(EVENT_KINDS)}, "
                                 f"not {event_kind!r}", {"field": "event_kind"})
        deliveries, next_cursor = await (await self._webhooks(tenant)).list_deliveries(
            tenant, subscription_id=subscription_id, status=status, task_id=task_id,
            event_kind=event_kind, limit=limit, cursor=cursor)
        return {"deliveries": [delivery.to_json() for delivery in deliveries],
                "next_cursor": next_cursor}

    @storage_trouble_unavailable
    async def webhook_delivery(self, tenant: str, delivery_id: str) -> dict[str, Any]:
        """One of `tenant`'s deliveries with its attempts, oldest first."""
        store = await self._webhooks(tenant)
        delivery, attempts = await store.get_delivery(tenant, delivery_id)
        return {**delivery.to_json(), "attempts": [attempt.to_json() for attempt in attempts]}

    @storage_trouble_unavailable
    async def redeliver_webhook(self, tenant: str, delivery_id: str) -> dict[str, Any]:
        """Send one of `tenant`'s deliveries again: pending now, with a fresh retry period and
        the same `webhook-id` (a receiver that dedupes by it sees one event)."""
        delivery = await (await self._webhooks(tenant)).redeliver(
            tenant, delivery_id, self.config.webhooks.retry_period_s)
        return delivery.to_json()

    @storage_trouble_unavailable
    async def callback_secret(self, tenant: str, rotate: bool = False,
                              overlap_s: float = DEFAULT_OVERLAP_S) -> dict[str, Any]:
        """The secret that signs `tenant`'s task callbacks (made on first use); with `rotate`
        a new one, the old one still signing alongside for `overlap_s` seconds."""
        store = await self._webhooks(tenant)
        if rotate:
            secret = await store.rotate_callback_secret(tenant, overlap_s)
        else:
            secret = await store.callback_secret(tenant)
        return {"tenant": tenant, "secret": secret, "rotated": bool(rotate)}

    # ------------------------------------------------------------------ inboxes

    @storage_trouble_unavailable
    async def post_message(self, tenant: str, agent_type: str, body: Any, *,
                           sender: str | None = None,
                           subject: str | None = None) -> InboxMessage:
        """Leave `body` in `tenant`'s inbox of `agent_type` (a registered type), from `sender`
        (who sent it: "user:<id>", "key:<id>", "client:<user name>"); committed when this returns. An
        agent type that declares `on_message` starts a task from it."""
        check_tenant(tenant)
        if not isinstance(agent_type, str) or not AGENT_TYPE_NAME.match(agent_type):
            raise InvalidRequest(f"agent_type must name an agent type (lowercase letters, "
                                 f"digits and _), not {agent_type!r}", {"field": "agent_type"})
        if agent_type not in self.agent_types:
            raise NotFound(f"no agent type {agent_type!r}; known types: "
                           f"{', '.join(sorted(self.agent_types))}", {"agent_type": agent_type})
        return await (await self._inbox()).post(agent_type, body, sender=sender,
                                                subject=subject, tenant=tenant)

    @storage_trouble_unavailable
    async def ack_inbox_message(self, tenant: str, agent_type: str,
                                message_id: str) -> InboxMessage:
        """Acknowledge `tenant`'s message `message_id` in `agent_type`'s inbox; `NotFound`,
        and nothing acknowledged, when that inbox of that tenant holds no such message."""
        check_tenant(tenant)
        # acking twice keeps the first time
        return await (await self._inbox()).ack(message_id, tenant=tenant, recipient=agent_type)

