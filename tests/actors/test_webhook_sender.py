"""The webhook sender against real receivers on 127.0.0.1: signed posts, the verdict on every
kind of answer, and the SSRF guard applied at every delivery (DNS answers from a stub)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook

from actors.agents.webhook_addresses import parse_networks
from actors.errors import InvalidTaskInput
from actors.webhook_sender import (
    DELIVERED, FAILED, RETRY, DestinationPolicy, WebhookSender, check_destination,
    retry_after_s)
from actors.webhook_signing import new_secret
from tests.support.webhooks import Receiver, serving

SECRET = new_secret()
BODY = b'{"type":"task.succeeded","timestamp":"2026-12-05T04:00:00+00:00","data":{}}'
LOOPBACK_ALLOWED = DestinationPolicy(allowed_networks=parse_networks("127.0.0.1/32"))


class Lookup:
    """A DNS stand-in: answers each lookup with the next address of `answers` (the last one
    for ever after), and counts the lookups."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.lookups = 0

    async def __call__(self, host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        self.lookups += 1
        address = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving() as endpoint:
        yield endpoint


@pytest.fixture
async def sender() -> AsyncIterator[WebhookSender]:
    sending = WebhookSender(LOOPBACK_ALLOWED, timeout_s=2.0)
    yield sending
    await sending.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_a_2xx_is_delivered_signed_with_every_secret(sender: WebhookSender,
                                                           receiver: Receiver) -> None:
    old = new_secret()
    receiver.answers = [web.Response(status=202, text="queued")]

    sent = await sender.send(receiver.url, "msg_1", BODY, [SECRET, old])

    assert (sent.outcome, sent.status_code, sent.error) == (DELIVERED, 202, None)
    assert sent.response_excerpt == "queued" and sent.duration_ms > 0
    ((headers, body),) = receiver.requests
    assert body == BODY and headers["webhook-id"] == "msg_1"
    assert headers["User-Agent"] == "ymera-webhooks/1"
    assert Webhook(SECRET).verify(body, headers) and Webhook(old).verify(body, headers)


@pytest.mark.parametrize(("status", "outcome"), [
    (200, DELIVERED), (204, DELIVERED), (400, FAILED), (401, FAILED), (404, FAILED),
    (410, FAILED), (422, FAILED), (408, RETRY), (409, RETRY), (425, RETRY), (429, RETRY),
    (500, RETRY), (502, RETRY), (503, RETRY),
])
async def test_each_answer_has_its_verdict(sender: WebhookSender, receiver: Receiver,
                                           status: int, outcome: str) -> None:
    receiver.answers = [web.Response(status=status, text="why" if status >= 300 else None)]

    sent = await sender.send(receiver.url, "msg_1", BODY, [SECRET])

    assert (sent.outcome, sent.status_code) == (outcome, status)
    assert (sent.error is None) == (outcome == DELIVERED)
    if outcome != DELIVERED:
        assert f"HTTP {status}" in (sent.error or "") and sent.response_excerpt == "why"
    assert len(receiver.requests) == 1


async def test_410_says_the_endpoint_is_gone(sender: WebhookSender, receiver: Receiver) -> None:
    receiver.answers = [web.Response(status=410)]
    sent = await sender.send(receiver.url, "msg_1", BODY, [SECRET])
    assert sent.outcome == FAILED and "gone" in (sent.error or "")


async def test_a_redirect_is_not_followed_and_fails(sender: WebhookSender,
                                                    receiver: Receiver) -> None:
    receiver.answers = [web.Response(status=302, headers={"Location": "http://10.0.0.5/"})]

    sent = await sender.send(receiver.url, "msg_1", BODY, [SECRET])

    assert sent.outcome == FAILED and "redirects are not followed" in (sent.error or "")
    assert "10.0.0.5" in (sent.error or "") and len(receiver.requests) == 1


async def test_retry_after_is_passed_on(sender: WebhookSender, receiver: Receiver) -> None:
    receiver.answers = [web.Response(status=429, headers={"Retry-After": "7"}),
                        web.Response(status=503, headers={"Retry-After": "soon"})]

    first = await sender.send(receiver.url, "msg_1", BODY, [SECRET])
    second = await sender.send(receiver.url, "msg_1", BODY, [SECRET])

    assert (first.outcome, first.retry_after_s) == (RETRY, 7.0)
    assert (second.outcome, second.retry_after_s) == (RETRY, None)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_s("120") == 120.0 and retry_after_s("-3") == 0.0
    assert retry_after_s("Thu, 01 Jan 2026 00:01:00 GMT", now=1767225600.0) == 60.0
    assert retry_after_s(None) is None and retry_after_s("nan") is None
    assert retry_after_s("later") is None


async def test_no_answer_is_a_retry(sender: WebhookSender) -> None:
    sent = await sender.send(f"http://127.0.0.1:{closed_port()}/hook", "msg_1", BODY, [SECRET])
    assert sent.outcome == RETRY and sent.status_code is None and sent.error


async def test_a_slow_receiver_times_out_and_is_retried(receiver: Receiver) -> None:
    receiver.delay_s = 2.0
    sender = WebhookSender(LOOPBACK_ALLOWED, timeout_s=0.2)
    try:
        sent = await sender.send(receiver.url, "msg_1", BODY, [SECRET])
    finally:
        await sender.close()
    assert sent.outcome == RETRY and sent.error == "no answer within 0.2 s"


async def test_the_answer_excerpt_keeps_its_first_thousand_characters(
    sender: WebhookSender, receiver: Receiver,
) -> None:
    receiver.answers = [web.Response(status=500, text="é" * 5000)]
    sent = await sender.send(receiver.url, "msg_1", BODY, [SECRET])
    assert sent.response_excerpt == "é" * 1000


async def test_an_address_that_turns_private_after_subscription_is_refused_at_delivery(
    receiver: Receiver,
) -> None:
    lookup = Lookup("93.184.216.34", "10.0.0.5")  # public when subscribed, private later
    policy = DestinationPolicy(lookup=lookup)
    url = f"http://hooks.example.test:{receiver.port}/hook"
    await check_destination(url, policy)  # the subscription is accepted
    sender = WebhookSender(policy, timeout_s=0.5)
    try:
        sent = await sender.send(url, "msg_1", BODY, [SECRET])
    finally:
        await sender.close()

    assert sent.outcome == FAILED and sent.status_code is None
    assert "10.0.0.5" in (sent.error or "") and "private address" in (sent.error or "")
    assert lookup.lookups == 2 and receiver.requests == []


async def test_allowed_networks_let_loopback_through_while_other_private_ones_stay_refused(
    sender: WebhookSender, receiver: Receiver,
) -> None:
    loopback = await sender.send(receiver.url, "msg_1", BODY, [SECRET])
    private = await sender.send(f"http://10.0.0.5:{receiver.port}/hook", "msg_2", BODY,
                                [SECRET])
    strict = WebhookSender(DestinationPolicy(), timeout_s=0.5)
    try:
        refused = await strict.send(receiver.url, "msg_3", BODY, [SECRET])
    finally:
        await strict.close()

    assert loopback.outcome == DELIVERED
    assert private.outcome == FAILED and "private address" in (private.error or "")
    assert refused.outcome == FAILED and "loopback address" in (refused.error or "")
    assert "YMERA_WEBHOOK_ALLOWED_NETWORKS" in (refused.error or "")
    assert [h["webhook-id"] for h, _ in receiver.requests] == ["msg_1"]


async def test_the_connection_goes_to_the_checked_address(receiver: Receiver) -> None:
    lookup = Lookup("127.0.0.1")
    sender = WebhookSender(DestinationPolicy(allowed_networks=parse_networks("127.0.0.0/8"),
                                             lookup=lookup))
    try:
        first = await sender.send(f"http://hooks.example.test:{receiver.port}/hook", "msg_1",
                                  BODY, [SECRET])
        second = await sender.send(f"http://hooks.example.test:{receiver.port}/hook", "msg_2",
                                   BODY, [SECRET])
    finally:
        await sender.close()

    assert first.outcome == second.outcome == DELIVERED and lookup.lookups == 2
    assert {h["Host"] for h, _ in receiver.requests} == {f"hooks.example.test:{receiver.port}"}


async def test_a_name_that_does_not_resolve_is_retried_later() -> None:
    async def unknown(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    sender = WebhookSender(DestinationPolicy(lookup=unknown))
    sent = await sender.send("https://hooks.example.test/x", "msg_1", BODY, [SECRET])
    assert sent.outcome == RETRY and "does not resolve" in (sent.error or "")


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://hooks.example.com/x", "http(s)"), ("https://user:pw@hooks.example.com/x",
                                              "credentials"),
    ("http://[::1", "not a valid URL"),
])
async def test_a_malformed_url_fails_without_sending(sender: WebhookSender, url: str,
                                                     message: str) -> None:
    sent = await sender.send(url, "msg_1", BODY, [SECRET])
    assert sent.outcome == FAILED and message in (sent.error or "")
    with pytest.raises(InvalidTaskInput):
        await check_destination(url, LOOPBACK_ALLOWED)


async def test_check_destination_refuses_private_addresses_for_a_subscription() -> None:
    with pytest.raises(InvalidTaskInput, match="private address") as refused:
        await check_destination("https://hooks.example.test/x",
                                DestinationPolicy(lookup=Lookup("192.168.1.9")))
    assert refused.value.details["field"] == "url"


@pytest.mark.parametrize("entries", ["10.0.0.0/33", "not-a-network", "10.0.0.0/8,,bad"])
def test_bad_allowed_networks_are_refused_naming_the_entry(entries: str) -> None:
    with pytest.raises(ValueError, match="is not a network in CIDR form"):
        parse_networks(entries)
    assert parse_networks(" 10.1.2.3 , ::1/128") == parse_networks(["10.1.2.3/32", "::1"])


async def test_connections_are_kept_for_at_most_64_destinations(receiver: Receiver) -> None:
    sender = WebhookSender(DestinationPolicy(allowed_networks=parse_networks("127.0.0.0/8"),
                                             lookup=Lookup("127.0.0.1")))
    try:
        sent = [await sender.send(f"http://host-{n}.example.test:{receiver.port}/hook",
                                  f"msg_{n}", BODY, [SECRET]) for n in range(70)]
        again = await sender.send(f"http://host-69.example.test:{receiver.port}/hook",
                                  "msg_again", BODY, [SECRET])
        kept = len(sender._sessions)
    finally:
        await sender.close()

    assert {s.outcome for s in sent} == {again.outcome} == {DELIVERED}
    assert kept == 64 and len(receiver.requests) == 71
