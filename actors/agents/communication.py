"""The `communication` agent: leave a message in another agent's inbox, or POST it to a webhook.

    {"to_agent": "learning", "message": {...}, "subject": "new data"}
        → {"delivered": "inbox", "message_id": "…", "to_agent": "learning"}
    {"url": "https://hooks.example.com/ymera", "message": {...}, "headers": {"X-Team": "ml"}}
        → {"delivered": "webhook", "status": 200, "attempts": 1, "url": "…"}

The form follows from the payload ("to_agent" or "url"; an explicit "delivery" of "inbox" or
"webhook" may say so). Inbox messages are kept by `storage.inbox.InboxStore` until acknowledged,
in the inbox of the task's own tenant: another tenant never lists or acks them.

A webhook is the message as a JSON body, signed by the Standard Webhooks scheme
(`actors.webhook_signing`), keyed with the operator's `YMERA_WEBHOOK_SECRET`: `webhook-id` (one
per message, `msg_<task id>`, the same when the task is retried, so a receiver can drop
duplicates), `webhook-timestamp` (unix seconds of the attempt) and `webhook-signature`
(`v1,<base64 HMAC-SHA256>` over `"{id}.{timestamp}.{body}"`). Receivers verify with any Standard
Webhooks library, or with `verify_signature`. Guarantees of a delivery:

- it goes only to public addresses (`actors.agents.webhook_addresses`): the host is resolved
  once, every address is checked, IPv6 forms that carry a private IPv4 included, and the
  connection is pinned to the checked addresses (no second lookup to rebind), unless the
  operator allows private networks or lists the address's network in
  YMERA_WEBHOOK_ALLOWED_NETWORKS; URLs with credentials and redirects are refused;
- connection errors, timeouts, 429 and 5xx are retried within the task, with exponential backoff
  (or the receiver's Retry-After, up to 10 s); when the attempts run out the agent raises
  `RetryableAgentError`, so the platform retries the task later;
- any other 3xx or 4xx fails the task at once (`InvalidTaskInput`): sending again will not help.

Migrating from the X-Ymera-Signature scheme: that header (HMAC-SHA256 hex over
`"{X-Ymera-Timestamp}.{body}"`) and X-Ymera-Timestamp are no longer sent. Verify the
`webhook-*` headers instead: `standardwebhooks.Webhook(secret).verify(body, headers)` when the
secret is a `whsec_` one (recommended: make one with `actors.webhook_signing.new_secret()`);
an older plain secret keeps working as its UTF-8 bytes, `Webhook(secret.encode())`, or
`verify_signature(secret, body, headers)` for either form.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
from yarl import URL

from actors.agent import Agent, invalid, json_type
from actors.agents.webhook_addresses import PinnedResolver, parse_networks, resolve_checked
from actors.errors import InvalidTaskInput, RetryableAgentError
from actors.webhook_signing import MESSAGE_ID_PREFIX, sign_headers, signer
from actors.webhook_signing import verify_signature as verify_signature  # for receivers
from storage.errors import InvalidRequest, StorageError
from storage.inbox import MAX_BODY_BYTES, InboxStore
from storage.messages import AGENT_TYPE_NAME, AgentSpec, AgentTask, Resources

HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "transfer-encoding",
                              "connection"})
MAX_HEADERS = 50
MAX_HEADER_VALUE = 8192
MAX_SUBJECT = 200
BACKOFF_BASE_S = 0.2
BACKOFF_MAX_S = 5.0
RETRY_AFTER_MAX_S = 10.0
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_ATTEMPTS = 3
SENDER = "communication"


def webhook_target(url: Any) -> URL:
    """The webhook URL, parsed by the parser aiohttp itself uses (so the host checked is the host
    connected to); `InvalidTaskInput` for anything but a plain http(s) URL with a host."""
    if not isinstance(url, str) or not url.strip():
        raise invalid(f"payload 'url' must be an http(s) URL string, got {json_type(url)}",
                      field="url")
    try:
        target = URL(url.strip())
        port = target.port
    except ValueError as exc:
        raise invalid(f"payload 'url' is not a valid URL: {exc}", field="url") from exc
    if target.scheme not in ("http", "https"):
        raise invalid(f"webhook URL must start with https:// or http://, not "
                      f"{target.scheme or 'nothing'!r}", field="url")
    if target.user is not None or target.password is not None:
        raise invalid("webhook URL must not carry credentials (user:password@); put a token "
                      "in payload 'headers' instead", field="url")
    if not target.raw_host or port is None:
        raise invalid("webhook URL has no host", field="url")
    return target


def extra_headers(headers: Any) -> dict[str, str]:
    """Payload 'headers', checked: names are HTTP tokens, values single-line strings, and none
    overrides what the platform sets (Content-Type, Host, webhook-*, X-Ymera-*)."""
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise invalid(f"payload 'headers' must be an object of strings, got "
                      f"{json_type(headers)}", field="headers")
    if len(headers) > MAX_HEADERS:
        raise invalid(f"payload 'headers' has {len(headers)} entries; at most {MAX_HEADERS}",
                      field="headers")
    for name, value in headers.items():
        lowered = name.lower()
        if not HEADER_NAME.match(name):
            raise invalid(f"header name {name!r} is not a valid HTTP header name",
                          field="headers")
        if lowered in RESERVED_HEADERS or lowered.startswith(("x-ymera-", "webhook-")):
            raise invalid(f"header {name!r} is set by the platform and cannot be overridden",
                          field="headers")
        if (not isinstance(value, str) or len(value) > MAX_HEADER_VALUE
                or any(c in value for c in "\r\n\0")):
            raise invalid(f"header {name!r} must be a single-line string of at most "
                          f"{MAX_HEADER_VALUE} characters", field="headers")
    return dict(headers)


def encoded_message(payload: dict[str, Any]) -> bytes:
    if "message" not in payload or payload["message"] is None:
        raise invalid("payload 'message' is required: the JSON value to deliver",
                      field="message")
    try:
        body = json.dumps(payload["message"], separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise invalid(f"payload 'message' is not plain JSON: {exc}", field="message") from exc
    if len(body) > MAX_BODY_BYTES:
        raise invalid(f"payload 'message' is {len(body)} bytes; at most {MAX_BODY_BYTES}",
                      field="message", size=len(body), limit=MAX_BODY_BYTES)
    return body


def backoff_s(attempt: int) -> float:
    """The pause after failed attempt `attempt` (1-based): 0.2 s, 0.4 s, … at most 5 s."""
    return min(BACKOFF_BASE_S * 2 ** (attempt - 1), BACKOFF_MAX_S)


def retry_after_s(value: str | None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from now, at most 10."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


class Communication(Agent):
    """Delivers messages to agent inboxes and to signed, SSRF-guarded webhooks."""

    spec = AgentSpec(
        name="communication",
        description="Delivers messages: leaves a JSON message in another agent's inbox, or POSTs "
        "it to an external webhook URL, signed with HMAC-SHA256 and retried with backoff.",
        capabilities=(
            "send a message to another agent's inbox",
            "notify an agent that new data or work is waiting",
            "post a JSON payload to a webhook URL",
            "sign outgoing webhooks with HMAC-SHA256 and a timestamp",
            "retry failed webhook deliveries with exponential backoff",
            "refuse webhooks to private, loopback and internal addresses",
            "forward task results to external systems over HTTPS",
            "send a callback or event notification to an HTTP endpoint",
            "hand work or data over to another agent",
        ),
        examples=(
            "send a message to the learning agent",
            "tell the monitoring agent the nightly import finished",
            "notify the data_processor agent that new rows arrived",
            "leave a note in the validation agent's inbox",
            "post this JSON to our webhook",
            "call the webhook at https://hooks.example.com/ymera with the results",
            "send a webhook notification to the ops endpoint",
            "deliver this payload to https://api.example.com/events",
            "forward the report to the external HTTP endpoint",
            "notify Slack through the incoming webhook",
            "ping the callback URL when the job is done",
            "message the text_analysis agent with these documents",
            "send a signed HTTP POST to the partner's endpoint",
            "push an event to the integration webhook",
            "inform the learning agent that the model should be retrained",
            "queue a message for another agent to pick up later",
            "alert the on-call webhook that the task failed",
            "send a message to another agent",
            "let the other agent know the job is done",
            "pass these results on to another agent",
            "tell another agent to pick up this batch",
            "post this payload to https://example.org/hook",
            "send a JSON event to https://hooks.example.net/events",
            "send the output to our webhook endpoint",
            "send a POST request with the results to our API",
            "submit these results to the external grading API",
            "trigger the webhook",
            "notify Microsoft Teams through its webhook",
            "forward the alert to the incident webhook",
            "send a callback to the client's URL",
            "notify the partner's callback endpoint that the order shipped",
            "deliver an event notification to the partner system",
            "push the results to the downstream service over HTTPS",
            "report the outcome to the external system by webhook",
            "hand the results to the other agent's queue",
            "send the daily sales totals to the finance webhook",
            "notify the warehouse system's endpoint that stock is low",
            "tell the learning agent the patient data was updated",
            "post the survey results to https://hooks.example.com/surveys",
            "forward the flagged transactions to the fraud team's webhook",
            "send this JSON to the endpoint https://api.example.com/notify",
            "let our Slack channel know through the webhook that the report is ready",
            "message the monitoring agent about the failed backup",
            "notify the billing service's callback URL",
        ),
        resources=Resources(num_cpus=0.05),
        concurrency=16,
        replicas=1,
        payload_hint={"to_agent": "learning", "subject": "new data",
                      "message": {"dataset": "sales-2026-12", "rows": 1200}},
    )

    def __init__(self) -> None:
        self.inbox: InboxStore | None = None

    async def setup(self) -> None:
        if self.context is None:
            raise RuntimeError("the communication agent needs its AgentContext before setup()")
        self.inbox = await InboxStore.open(self.context.database_url)

    async def close(self) -> None:
        """Release the database connections (agents have no teardown hook; embedders and tests
        call this)."""
        if self.inbox is not None:
            await self.inbox.close()
            self.inbox = None

    @property
    def settings(self) -> dict[str, Any]:
        return self.context.settings if self.context else {}

    async def run(self, task: AgentTask) -> dict[str, Any]:
        delivery = self._delivery(task.payload)
        if delivery == "inbox":
            return await self.deliver_to_inbox(task)
        return await self.deliver_to_webhook(task)

    @staticmethod
    def _delivery(payload: dict[str, Any]) -> str:
        stated = payload.get("delivery")
        if stated is not None and stated not in ("inbox", "webhook"):
            raise invalid(f"payload 'delivery' must be \"inbox\" or \"webhook\", not "
                          f"{stated!r}", field="delivery")
        forms = [form for form, key in (("inbox", "to_agent"), ("webhook", "url"))
                 if key in payload]
        if stated is None and len(forms) > 1:
            raise invalid("payload gives both 'to_agent' and 'url'; give one (or say which "
                          "with 'delivery')", fields=["to_agent", "url"])
        if stated is None and not forms:
            raise invalid("payload needs 'to_agent' (the agent type whose inbox gets the "
                          "message) or 'url' (a webhook to POST it to), plus 'message'",
                          fields=["to_agent", "url"])
        return stated or forms[0]

    async def deliver_to_inbox(self, task: AgentTask) -> dict[str, Any]:
        payload = task.payload
        to_agent = payload.get("to_agent")
        if not isinstance(to_agent, str) or not AGENT_TYPE_NAME.fullmatch(to_agent):
            raise invalid(f"payload 'to_agent' must name an agent type (lowercase letters, "
                          f"digits and _, like \"learning\"), got {to_agent!r}",
                          field="to_agent")
        subject = payload.get("subject")
        if subject is not None and (not isinstance(subject, str) or not subject
                                    or len(subject) > MAX_SUBJECT):
            raise invalid(f"payload 'subject' must be a non-empty string of at most "
                          f"{MAX_SUBJECT} characters", field="subject")
        encoded_message(payload)
        if self.inbox is None:
            raise RuntimeError("the communication agent was not set up")
        try:
            message = await self.inbox.post(to_agent, payload["message"], sender=SENDER,
                                            task_id=task.task_id, subject=subject,
                                            tenant=task.tenant)
        except InvalidRequest as exc:
            raise invalid(exc.message, **exc.details) from exc
        except StorageError as exc:
            raise RetryableAgentError(f"the inbox could not be written: {exc.message}") from exc
        return {"delivered": "inbox", "message_id": message.id, "to_agent": to_agent}

    async def deliver_to_webhook(self, task: AgentTask) -> dict[str, Any]:
        payload = task.payload
        if "url" not in payload:
            raise invalid("payload 'url' is required for webhook delivery", field="url")
        target = webhook_target(payload["url"])
        body = encoded_message(payload)
        headers = extra_headers(payload.get("headers"))
        secret = self.settings.get("webhook_secret")
        if not secret:
            raise invalid("webhooks are signed, and no signing secret is configured: the "
                          "operator must set YMERA_WEBHOOK_SECRET", setting="webhook_secret")
        try:
            signer(secret)
        except ValueError as exc:
            raise invalid(f"YMERA_WEBHOOK_SECRET cannot sign: {exc}",
                          setting="webhook_secret") from exc
        allow_private = bool(self.settings.get("webhook_allow_private_networks", False))
        allowed = parse_networks(self.settings.get("webhook_allowed_networks") or "")
        # webhook_target refuses a URL without a host or port
        assert target.raw_host is not None and target.port is not None
        addresses = await resolve_checked(target.raw_host, target.port, allow_private, allowed)
        connector = aiohttp.TCPConnector(resolver=PinnedResolver(addresses),
                                         use_dns_cache=False)
        async with aiohttp.ClientSession(connector=connector) as session:
            return await self._post_with_retries(session, task, target, body, headers, secret)

    async def _post_with_retries(self, session: aiohttp.ClientSession, task: AgentTask,
                                 target: URL, body: bytes, headers: dict[str, str],
                                 secret: str) -> dict[str, Any]:
        url = str(target)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + task.timeout_s
        timeout_s = float(self.settings.get("webhook_timeout_s", DEFAULT_TIMEOUT_S))
        max_attempts = max(1, int(self.settings.get("webhook_max_attempts",
                                                    DEFAULT_MAX_ATTEMPTS)))
        attempt, last_error = 0, ""
        message_id = MESSAGE_ID_PREFIX + task.task_id
        own = {name.lower() for name in headers}
        while attempt < max_attempts:
            attempt += 1
            platform = {name: value for name, value in
                        sign_headers([secret], message_id, body, datetime.now(UTC)).items()
                        if name not in own}  # a caller's own User-Agent is kept
            signed = {**headers, **platform, "X-Ymera-Task-Id": task.task_id}
            pause = backoff_s(attempt)
            budget = aiohttp.ClientTimeout(total=max(min(timeout_s, deadline - loop.time()), 0.05))
            try:
                async with session.post(target, data=body, headers=signed, allow_redirects=False,
                                        timeout=budget) as response:
                    status = response.status
                    if 200 <= status < 300:
                        return {"delivered": "webhook", "status": status, "attempts": attempt,
                                "url": url}
                    if status != 429 and status < 500:
                        raise await self._refusal(response, url)
                    last_error = f"HTTP {status} {response.reason or ''}".strip()
                    pause = retry_after_s(response.headers.get("Retry-After")) or pause
            except asyncio.TimeoutError:
                last_error = f"no answer within {timeout_s:g} s"
            except aiohttp.ClientError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if attempt < max_attempts and loop.time() + pause >= deadline:
                break  # another attempt would outlive the task
            if attempt < max_attempts:
                await asyncio.sleep(pause)
        raise RetryableAgentError(
            f"webhook {url} was not delivered after {attempt} attempt"
            f"{'s' if attempt > 1 else ''}; last error: {last_error}",
            {"url": url, "attempts": attempt, "last_error": last_error})

    @staticmethod
    async def _refusal(response: aiohttp.ClientResponse, url: str) -> InvalidTaskInput:
        status = response.status
        if 300 <= status < 400:
            location = response.headers.get("Location")
            return invalid(f"webhook {url} answered {status} redirecting to {location!r}; "
                           "redirects are not followed: use the final URL", status=status,
                           location=location)
        try:
            excerpt = (await response.content.read(200)).decode(errors="replace").strip()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            excerpt = ""
        return invalid(f"webhook {url} refused the delivery with HTTP {status} "
                       f"{response.reason or ''}".rstrip() + (f": {excerpt}" if excerpt else ""),
                       status=status)
