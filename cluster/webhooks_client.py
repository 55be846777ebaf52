"""The client's events-out calls (`Client.webhook_*`, `Client.send_message`): a tenant's webhook
subscriptions, their deliveries, the secret that signs its task callbacks, and messages left in
an agent type's inbox.

    hook = client.webhook_create("https://hooks.example.com/ymera", ["task.succeeded"],
                                 tenant="acme")
    hook["secret"]                              # shown this once: give it to the receiver
    client.webhook_deliveries(tenant="acme", status="failed")
    client.webhook_redeliver(delivery_id, tenant="acme")

Guarantees: every call names one tenant (`default` unless told) and the orchestrator acts within
it only (`actors.webhook_admin`): another tenant's subscription or delivery is `NotFound`. A URL
that is not http(s) or resolves to a private address is `InvalidRequest` naming `url`, and
nothing is stored. Answers are JSON-ready dicts (`*.to_json()` shapes); a secret appears only in
the answers of `webhook_create`, `webhook_rotate_secret` and `webhook_callback_secret`.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

from storage.messages import InboxMessage


class WebhookCalls:
    """The webhook and inbox calls of `cluster.client.Client`, which provides `_result` (one
    blocking, error-translated call of the orchestrator's handle) and who is calling."""

    def _result(self, invoke: Callable[[Any], Any]) -> Any:
        raise NotImplementedError

    def _caller(self) -> str:
        raise NotImplementedError

    def webhook_create(self, url: str, events: builtins.list[str] | str, *,
                       agent_type: str | None = None, workflow: str | None = None,
                       description: str | None = None, enabled: bool = True,
                       tenant: str = "default") -> dict[str, Any]:
        """Subscribe `url` to `tenant`'s `events` (kinds like "task.succeeded", patterns like
        "task.*", or "*"; a comma-separated string works too), optionally only those of one
        agent type or workflow. The subscription with its `secret`, shown this once."""
        who = self._caller()
        return self._result(lambda h: h.create_webhook.remote(
            tenant, url, events, agent_type=agent_type, workflow=workflow,
            description=description, created_by=who, enabled=enabled))

    def webhook_list(self, tenant: str = "default") -> builtins.list[dict[str, Any]]:
        """`tenant`'s subscriptions, oldest first (never their secrets)."""
        listed: dict[str, Any] = self._result(lambda h: h.list_webhooks.remote(tenant))
        return list(listed["webhooks"])

    def webhook_get(self, subscription_id: str, tenant: str = "default") -> dict[str, Any]:
        return self._result(lambda h: h.get_webhook.remote(tenant, subscription_id))

    def webhook_update(self, subscription_id: str, tenant: str = "default",
                       **changes: Any) -> dict[str, Any]:
        """Change only the given fields: `url`, `events`, `enabled`, `agent_type`, `workflow`,
        `description` (None clears a filter or the description)."""
        return self._result(lambda h: h.update_webhook.remote(tenant, subscription_id,
                                                               **changes))

    def webhook_delete(self, subscription_id: str, tenant: str = "default") -> dict[str, Any]:
        """Unsubscribe; the subscription's pending deliveries are marked failed."""
        return self._result(lambda h: h.delete_webhook.remote(tenant, subscription_id))

    def webhook_rotate_secret(self, subscription_id: str, overlap_s: float = 86400.0,
                              tenant: str = "default") -> dict[str, Any]:
        """A new secret (in the answer, this once); deliveries are signed with the old one too
        for `overlap_s` seconds, so the receiver can switch without losing one."""
        return self._result(lambda h: h.rotate_webhook_secret.remote(
            tenant, subscription_id, overlap_s))

    def webhook_deliveries(self, *, subscription_id: str | None = None,
                           status: str | None = None, task_id: str | None = None,
                           event_kind: str | None = None, limit: int = 50,
                           cursor: str | None = None,
                           tenant: str = "default") -> dict[str, Any]:
        """`tenant`'s deliveries, newest first: {"deliveries", "next_cursor"}."""
        return self._result(lambda h: h.webhook_deliveries.remote(
            tenant, subscription_id=subscription_id, status=status, task_id=task_id,
            event_kind=event_kind, limit=limit, cursor=cursor))

    def webhook_delivery(self, delivery_id: str, tenant: str = "default") -> dict[str, Any]:
        """One delivery with its `attempts` (status code, error, response excerpt, duration)."""
        return self._result(lambda h: h.webhook_delivery.remote(tenant, delivery_id))

    def webhook_redeliver(self, delivery_id: str, tenant: str = "default") -> dict[str, Any]:
        """Send a delivered or failed delivery again, under the same `webhook-id`."""
        return self._result(lambda h: h.redeliver_webhook.remote(tenant, delivery_id))

    def webhook_callback_secret(self, rotate: bool = False, overlap_s: float = 86400.0,
                                tenant: str = "default") -> dict[str, Any]:
        """The secret that signs `tenant`'s task callbacks (`callback_url`); with `rotate` a new
        one, the old one still signing for `overlap_s` seconds."""
        return self._result(lambda h: h.callback_secret.remote(tenant, rotate, overlap_s))

    def send_message(self, agent_type: str, body: Any, *, subject: str | None = None,
                     tenant: str = "default") -> InboxMessage:
        """Leave `body` (any JSON value but null) in `tenant`'s inbox of `agent_type`; an
        agent type that declares `on_message` starts a task from it. Sent as
        `client:<your user name>`."""
        who = self._caller()
        return self._result(lambda h: h.post_message.remote(
            tenant, agent_type, body, sender=who, subject=subject))
