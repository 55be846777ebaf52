"""Sending one webhook delivery: one signed POST, guarded against server-side request forgery,
and a verdict on what to do next.

    sender = WebhookSender(DestinationPolicy(), timeout_s=10)
    sent = await sender.send(url, delivery_id, body, secrets)
    sent.outcome                      # "delivered" | "retry" | "failed"

Guarantees of `send`:
- the host is resolved again at every delivery and every address it resolves to is checked
  (`actors.agents.webhook_addresses`); a private, loopback, link-local … address (an IPv6 form
  carrying one included) refuses the delivery before anything is sent, unless the operator
  allows private networks or the address lies in one of the allowed networks; the connection
  is pinned to the checked addresses, so a second DNS answer cannot rebind it;
- redirects are never followed; at most `timeout_s` is spent on one attempt;
- the verdict: 2xx delivered; 408, 409, 425, 429, 5xx, no answer (connection refused, reset,
  timeout) and a host that does not resolve now: retry (with the receiver's Retry-After, when it
  gives one); the guard's refusal, a 3xx, 410 Gone and every other 4xx: failed at once, since
  sending again would not help;
- it never raises for anything the receiver or the network does: every answer is a `Sent`.

Connections are kept alive per (host, port, checked addresses): the next delivery to the same
place reuses them only when its fresh resolution gives the same addresses.
"""

from __future__ import annotations

import asyncio
import email.utils
import ssl
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import aiohttp
from aiohttp.abc import ResolveResult
from yarl import URL

from actors.agents.webhook_addresses import (
    AddressLookup, Network, PinnedResolver, parse_networks, resolve_checked)
from actors.errors import InvalidTaskInput, RetryableAgentError
from actors.webhook_signing import sign_headers

DELIVERED: Final = "delivered"
RETRY: Final = "retry"
FAILED: Final = "failed"
RETRYABLE_STATUSES: Final = frozenset({408, 409, 425, 429})
EXCERPT_CHARS: Final = 1000
EXCERPT_READ_BYTES: Final = 4 * EXCERPT_CHARS
KEPT_SESSIONS: Final = 64


@dataclass(frozen=True)
class Sent:
    """What one attempt came to: the receiver's status (None when none answered), the error
    (None when delivered), the start of the answer's body, how long it took, and how long the
    receiver asked to be left alone (Retry-After, seconds)."""

    outcome: str
    status_code: int | None
    error: str | None
    response_excerpt: str | None
    duration_ms: float
    retry_after_s: float | None = None


@dataclass(frozen=True)
class DestinationPolicy:
    """Where webhooks may go: public addresses only, unless `allow_private` (every address) or
    the address lies in `allowed_networks`. `lookup` replaces DNS (tests)."""

    allow_private: bool = False
    allowed_networks: tuple[Network, ...] = ()
    lookup: AddressLookup | None = None

    @classmethod
    def from_settings(cls, allow_private: bool, allowed_networks: Sequence[str] | str,
                      lookup: AddressLookup | None = None) -> DestinationPolicy:
        """`ValueError` names an entry of `allowed_networks` that is not a network."""
        return cls(allow_private, parse_networks(allowed_networks), lookup)


def parse_target(url: str) -> URL:
    """`url` parsed as aiohttp parses it; `ValueError` unless a plain http(s) URL with a host."""
    try:
        target = URL(url)
        port = target.port
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{url!r} is not a valid URL: {exc}") from exc
    if target.scheme not in ("http", "https") or not target.raw_host or port is None:
        raise ValueError(f"{url!r} is not an http(s) URL with a host")
    if target.user is not None or target.password is not None:
        raise ValueError("a webhook URL must not carry credentials")
    return target


async def check_destination(url: str, policy: DestinationPolicy) -> None:
    """Refuse `url` now if it cannot take webhooks (for subscription time): `InvalidTaskInput`
    (field "url") when it is malformed, does not resolve, or resolves to an address the policy
    refuses; `RetryableAgentError` when DNS fails for now."""
    try:
        target = parse_target(url)
    except ValueError as exc:
        raise InvalidTaskInput(str(exc), {"field": "url"}) from exc
    assert target.raw_host is not None and target.port is not None  # parse_target checked
    await resolve_checked(target.raw_host, target.port, policy.allow_private,
                          policy.allowed_networks, policy.lookup)


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) as seconds from now; None if absent or
    unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (email.utils.parsedate_to_datetime(value).timestamp()
                       - (time.time() if now is None else now))
        except (TypeError, ValueError, IndexError):
            return None
    return max(seconds, 0.0) if seconds == seconds else None  # NaN is unreadable


def verdict(status: int) -> str:
    """What an HTTP status means for a delivery (see the module)."""
    if 200 <= status < 300:
        return DELIVERED
    if status in RETRYABLE_STATUSES or status >= 500:
        return RETRY
    return FAILED


class WebhookSender:
    """Posts signed deliveries under a `DestinationPolicy` (see the module)."""

    def __init__(self, policy: DestinationPolicy, timeout_s: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.policy = policy
        self.timeout_s = timeout_s
        self.ssl_context = ssl_context
        self._sessions: OrderedDict[tuple[object, ...], aiohttp.ClientSession] = OrderedDict()
        self._in_use: dict[tuple[object, ...], int] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def send(self, url: str, msg_id: str, body: bytes, secrets: Sequence[str],
                   at: datetime | None = None) -> Sent:
        """POST `body` to `url` signed with `secrets` as message `msg_id`; the verdict."""
        started = time.perf_counter()
        at = at or datetime.now(UTC)

        def took() -> float:
            return round((time.perf_counter() - started) * 1000, 3)

        try:
            target = parse_target(url)
        except ValueError as exc:
            return Sent(FAILED, None, f"not sent: {exc}", None, took())
        assert target.raw_host is not None and target.port is not None  # parse_target checked
        try:
            addresses = await resolve_checked(target.raw_host, target.port,
                                              self.policy.allow_private,
                                              self.policy.allowed_networks, self.policy.lookup)
        except InvalidTaskInput as exc:
            # the guard's refusal fails now; a name that does not resolve may come back
            outcome = FAILED if "kind" in exc.details else RETRY
            return Sent(outcome, None, f"not sent: {exc.message}", None, took())
        except RetryableAgentError as exc:
            return Sent(RETRY, None, f"not sent: {exc.message}", None, took())
        try:
            headers = sign_headers(secrets, msg_id, body, at)
        except ValueError as exc:
            return Sent(FAILED, None, f"not sent: {exc}", None, took())
        key, session = self._session(target, addresses)
        self._in_use[key] = self._in_use.get(key, 0) + 1
        try:
            async with session.post(target, data=body, headers=headers, allow_redirects=False,
                                    timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                    ssl=self.ssl_context if self.ssl_context else True,
                                    ) as response:
                excerpt = await _excerpt(response)
                status = response.status
                outcome = verdict(status)
                error = None if outcome == DELIVERED else _status_error(response)
                wait = (retry_after_s(response.headers.get("Retry-After"))
                        if outcome == RETRY else None)
                return Sent(outcome, status, error, excerpt, took(), wait)
        except asyncio.TimeoutError:
            return Sent(RETRY, None, f"no answer within {self.timeout_s:g} s", None, took())
        except aiohttp.ClientError as exc:
            return Sent(RETRY, None, f"{type(exc).__name__}: {exc}", None, took())
        except OSError as exc:
            return Sent(RETRY, None, f"{type(exc).__name__}: {exc}", None, took())
        finally:
            self._in_use[key] -= 1
            if not self._in_use[key]:
                del self._in_use[key]

    def _session(self, target: URL, addresses: list[ResolveResult],
                 ) -> tuple[tuple[object, ...], aiohttp.ClientSession]:
        """The kept session pinned to exactly `addresses` for this host and port (made if
        there is none); the least recently used idle ones beyond `KEPT_SESSIONS` are closed."""
        key = (target.raw_host, target.port,
               tuple(sorted((a["host"], a["port"], a["family"]) for a in addresses)))
        session = self._sessions.get(key)
        if session is not None and not session.closed:
            self._sessions.move_to_end(key)
            return key, session
        connector = aiohttp.TCPConnector(resolver=PinnedResolver(addresses),
                                         use_dns_cache=False, limit=0)
        session = aiohttp.ClientSession(connector=connector)
        self._sessions[key] = session
        idle = [k for k in self._sessions if k not in self._in_use and k != key]
        for old in idle[:max(0, len(self._sessions) - KEPT_SESSIONS)]:
            closing = asyncio.get_running_loop().create_task(self._sessions.pop(old).close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        return key, session

    async def close(self) -> None:
        """Close every kept connection."""
        sessions, self._sessions = list(self._sessions.values()), OrderedDict()
        for session in sessions:
            await session.close()
        if self._closing:
            await asyncio.wait(list(self._closing))


async def _excerpt(response: aiohttp.ClientResponse) -> str | None:
    try:
        raw = await response.content.read(EXCERPT_READ_BYTES)
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None
    return raw.decode(errors="replace")[:EXCERPT_CHARS] if raw else None


def _status_error(response: aiohttp.ClientResponse) -> str:
    text = f"HTTP {response.status} {response.reason or ''}".rstrip()
    if 300 <= response.status < 400:
        return (f"{text} to {response.headers.get('Location')!r}: redirects are not followed; "
                "subscribe the final URL")
    if response.status == 410:
        return f"{text}: the receiver says this endpoint is gone"
    return text
