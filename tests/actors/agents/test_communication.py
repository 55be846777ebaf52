"""The communication agent: inbox delivery, signed webhooks with bounded retries, the SSRF guard,
and clear refusals of bad payloads. Webhooks go to a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook

from actors.agent import Agent
from actors.agents.communication import Communication, backoff_s, retry_after_s, verify_signature
from actors.agents.webhook_addresses import forbidden_kind
from actors.errors import InvalidTaskInput, RetryableAgentError
from actors.webhook_signing import new_secret, sign_headers
from storage.database import migrate_async
from storage.inbox import InboxStore
from storage.messages import AgentContext, AgentTask
from tests.support.webhooks import Receiver, serving
from tests.support.databases import fresh_sqlite_url

SECRET = "test-webhook-secret-0123456789abcdef"
SETTINGS = {"webhook_secret": SECRET, "webhook_allow_private_networks": True,
            "webhook_timeout_s": 0.5, "webhook_max_attempts": 3}

MakeAgent = Callable[..., Awaitable[Communication]]


@pytest.fixture
async def database_url(tmp_path: Path) -> str:
    url = fresh_sqlite_url(tmp_path)
    await migrate_async(url)
    return url


@pytest.fixture
async def make_agent(database_url: str) -> AsyncIterator[MakeAgent]:
    """Set up a communication agent; keyword arguments override `SETTINGS`."""
    agents: list[Communication] = []

    async def make(**settings: Any) -> Communication:
        agent = Communication()
        agent.context = AgentContext(replica="agent:communication:0", namespace="t",
                                     database_url=database_url,
                                     settings={**SETTINGS, **settings})
        await agent.setup()
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        await agent.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving() as endpoint:
        yield endpoint


def task(payload: dict[str, Any], timeout_s: float = 10.0, tenant: str = "default") -> AgentTask:
    return AgentTask(task_id="f" * 32, attempt=1, agent_type="communication",
                     description="deliver", payload=payload, timeout_s=timeout_s, tenant=tenant)


async def refusal(agent: Communication, payload: dict[str, Any]) -> str:
    with pytest.raises(InvalidTaskInput) as raised:
        await agent.run(task(payload))
    return str(raised.value)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_spec_declares_what_the_router_learns_from():
    spec = Communication.spec
    assert spec.name == "communication" and issubclass(Communication, Agent)
    assert len(spec.capabilities) >= 6
    assert len(set(spec.examples)) == len(spec.examples) >= 15
    assert spec.resources.num_cpus == 0.05 and spec.concurrency == 16 and spec.replicas == 1


async def test_inbox_delivery_is_stored_listed_and_acked(make_agent: MakeAgent,
                                                         database_url: str) -> None:
    agent = await make_agent()
    result = await agent.run(task({"to_agent": "learning", "message": {"retrain": True},
                                   "subject": "new data"}))
    assert result == {"delivered": "inbox", "message_id": result["message_id"],
                      "to_agent": "learning"}
    json.dumps(result)

    inbox = await InboxStore.open(database_url)
    try:
        (message,), _ = await inbox.list("learning")
        assert message.id == result["message_id"] and message.body == {"retrain": True}
        assert message.sender == "communication" and message.task_id == "f" * 32
        assert message.subject == "new data"
        assert (await inbox.ack(message.id)).acked_at is not None
        assert await inbox.unacked_count("learning") == 0
    finally:
        await inbox.close()


async def test_a_message_lands_in_its_tasks_tenants_inbox_only(make_agent: MakeAgent,
                                                               database_url: str) -> None:
    agent = await make_agent()
    result = await agent.run(task({"to_agent": "learning", "message": {"canary": "zephyr"}},
                                  tenant="acme"))

    async with await InboxStore.open(database_url) as inbox:
        (message,), _ = await inbox.list("learning", tenant="acme")
        assert message.id == result["message_id"] and message.tenant == "acme"
        assert (await inbox.list("learning", tenant="globex"))[0] == []
        assert (await inbox.list("learning"))[0] == []  # nor the default tenant's


async def test_a_webhook_failing_twice_is_delivered_on_the_third_attempt_signed(
    make_agent: MakeAgent, receiver: Receiver,
) -> None:
    receiver.answers = [web.Response(status=500), web.Response(status=503)]
    agent = await make_agent()

    result = await agent.run(task({"url": receiver.url, "message": {"hello": "wörld"},
                                   "headers": {"Authorization": "Bearer abc"}}))

    assert result == {"delivered": "webhook", "status": 200, "attempts": 3, "url": receiver.url}
    assert len(receiver.requests) == 3
    headers, body = receiver.requests[-1]
    assert json.loads(body) == {"hello": "wörld"}
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Ymera-Task-Id"] == "f" * 32 and headers["Authorization"] == "Bearer abc"
    assert "X-Ymera-Signature" not in headers and "X-Ymera-Timestamp" not in headers
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    # one message: the same webhook-id on every attempt, so the receiver can drop duplicates
    assert {h["webhook-id"] for h, _ in receiver.requests} == {"msg_" + "f" * 32}
    assert Webhook(SECRET.encode()).verify(body, headers) == {"hello": "wörld"}
    assert verify_signature(SECRET, body, headers, max_age_s=300)
    assert not verify_signature("wrong-secret", body, headers)
    assert not verify_signature(SECRET, body + b" ", headers)
    moved = {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)}
    assert not verify_signature(SECRET, body, moved)


async def test_a_whsec_secret_verifies_with_the_standard_webhooks_library(
    make_agent: MakeAgent, receiver: Receiver,
) -> None:
    secret = new_secret()
    agent = await make_agent(webhook_secret=secret)

    await agent.run(task({"url": receiver.url, "message": [1, 2]}))

    ((headers, body),) = receiver.requests
    assert Webhook(secret).verify(body, headers) == [1, 2]


def test_verify_signature_refuses_stale_missing_and_malformed_stamps() -> None:
    old = datetime.now(UTC) - timedelta(hours=1)
    stale = sign_headers([SECRET], "msg_1", b"{}", old)
    fresh = sign_headers([SECRET], "msg_1", b"{}", datetime.now(UTC) - timedelta(seconds=90))
    assert not verify_signature(SECRET, b"{}", stale)  # outside the 5-minute window
    assert verify_signature(SECRET, b"{}", fresh)
    assert not verify_signature(SECRET, b"{}", fresh, max_age_s=30)
    assert not verify_signature(SECRET, b"{}", {**fresh, "webhook-timestamp": "soon"})
    assert not verify_signature(SECRET, b"{}", {k: v for k, v in fresh.items()
                                                if k != "webhook-signature"})


async def test_a_4xx_fails_at_once_without_retrying(make_agent: MakeAgent,
                                                    receiver: Receiver) -> None:
    receiver.answers = [web.Response(status=404, text="no such hook")]
    agent = await make_agent()

    message = await refusal(agent, {"url": receiver.url, "message": {"x": 1}})

    assert "HTTP 404" in message and "no such hook" in message
    assert len(receiver.requests) == 1


async def test_a_redirect_is_not_followed(make_agent: MakeAgent, receiver: Receiver) -> None:
    receiver.answers = [web.Response(status=302, headers={"Location": "http://10.0.0.5/"})]
    agent = await make_agent()

    message = await refusal(agent, {"url": receiver.url, "message": {"x": 1}})

    assert "302" in message and "10.0.0.5" in message and "redirects are not followed" in message
    assert len(receiver.requests) == 1


async def test_429_waits_as_long_as_retry_after_says(make_agent: MakeAgent,
                                                    receiver: Receiver) -> None:
    receiver.answers = [web.Response(status=429, headers={"Retry-After": "1"})]
    agent = await make_agent()

    started = time.monotonic()
    result = await agent.run(task({"url": receiver.url, "message": {"x": 1}}))

    assert result["attempts"] == 2 and time.monotonic() - started >= 0.9


async def test_an_unreachable_webhook_is_retryable_after_every_attempt(
    make_agent: MakeAgent,
) -> None:
    agent = await make_agent()
    url = f"http://127.0.0.1:{free_port()}/hook"

    with pytest.raises(RetryableAgentError) as raised:
        await agent.run(task({"url": url, "message": {"x": 1}}))

    assert "after 3 attempts" in str(raised.value) and "last error" in str(raised.value)
    assert raised.value.details["attempts"] == 3


async def test_a_slow_webhook_times_out_and_is_retried(make_agent: MakeAgent,
                                                      receiver: Receiver) -> None:
    receiver.delay_s = 1.0
    agent = await make_agent(webhook_timeout_s=0.2, webhook_max_attempts=2)

    with pytest.raises(RetryableAgentError) as raised:
        await agent.run(task({"url": receiver.url, "message": {"x": 1}}))

    assert "no answer within 0.2 s" in str(raised.value)
    assert len(receiver.requests) == 2


async def test_retries_stop_before_they_would_outlive_the_task(make_agent: MakeAgent) -> None:
    agent = await make_agent(webhook_max_attempts=10)
    url = f"http://127.0.0.1:{free_port()}/hook"

    started = time.monotonic()
    with pytest.raises(RetryableAgentError) as raised:
        await agent.run(task({"url": url, "message": {"x": 1}}, timeout_s=0.5))

    assert time.monotonic() - started < 0.5
    assert raised.value.details["attempts"] < 10


@pytest.mark.parametrize(("host", "address"), [
    ("127.0.0.1", "127.0.0.1"), ("10.0.0.5", "10.0.0.5"), ("[::1]", "::1"),
    ("localhost", "127.0.0.1"), ("169.254.169.254", "169.254.169.254"),
])
async def test_private_addresses_are_refused_before_any_request(
    make_agent: MakeAgent, receiver: Receiver, host: str, address: str,
) -> None:
    agent = await make_agent(webhook_allow_private_networks=False)
    url = f"http://{host}:{receiver.port}/hook"

    message = await refusal(agent, {"url": url, "message": {"x": 1}})

    assert "refusing" in message and "YMERA_WEBHOOK_ALLOW_PRIVATE_NETWORKS" in message
    assert address in message or (host == "localhost" and "::1" in message)
    assert receiver.requests == []


async def test_an_allowed_network_lets_its_receiver_through_and_no_other(
    make_agent: MakeAgent, receiver: Receiver,
) -> None:
    agent = await make_agent(webhook_allow_private_networks=False,
                             webhook_allowed_networks="127.0.0.1/32")

    result = await agent.run(task({"url": receiver.url, "message": {"x": 1}}))
    message = await refusal(agent, {"url": f"http://[::1]:{receiver.port}/hook",
                                    "message": {"x": 1}})

    assert result["delivered"] == "webhook" and len(receiver.requests) == 1
    assert "::1, a loopback address" in message


@pytest.mark.parametrize(("address", "kind"), [
    ("192.168.1.20", "private"), ("172.16.0.1", "private"), ("224.0.0.1", "multicast"),
    ("0.0.0.0", "unspecified"), ("fd12:3456::1", "private"), ("fe80::1", "link-local"),
    ("::ffff:127.0.0.1", "loopback"), ("100.64.0.1", "non-public"), ("::", "unspecified"),
    ("8.8.8.8", None), ("2606:4700:4700::1111", None),
])
def test_which_addresses_count_as_private(address: str, kind: str | None) -> None:
    assert forbidden_kind(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(("address", "kind"), [
    ("2002:7f00:1::", "6to4-embedded loopback"),  # 6to4 of 127.0.0.1
    ("2002:c0a8:0101::1", "6to4-embedded private"),  # 6to4 of 192.168.1.1
    ("2002:a9fe:a9fe::", "6to4-embedded link-local"),  # 6to4 of 169.254.169.254
    # Teredo: the client is the last 32 bits XOR 0xffffffff (here 127.0.0.1 and 10.0.0.1)
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo-embedded loopback"),
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "Teredo-embedded private"),
    ("64:ff9b::7f00:1", "NAT64-embedded loopback"),
    ("64:ff9b::a9fe:a9fe", "NAT64-embedded link-local"),
    ("64:ff9b:1::c0a8:101", "NAT64-embedded private"),
    ("64:ff9b:1::808:808", "NAT64-local"),
    ("::ffff:10.1.2.3", "private"),  # IPv4-mapped
    ("::127.0.0.1", "IPv4-compatible-embedded loopback"),
    ("::10.0.0.1", "IPv4-compatible-embedded private"),
])
def test_ipv6_forms_that_carry_a_private_ipv4_are_refused(address: str, kind: str) -> None:
    assert forbidden_kind(ipaddress.ip_address(address)) == kind


def test_a_6to4_address_of_a_public_ipv4_stays_allowed() -> None:
    assert forbidden_kind(ipaddress.ip_address("2002:808:808::1")) is None  # 8.8.8.8


async def test_without_a_secret_the_operator_is_told_what_to_set(make_agent: MakeAgent,
                                                                 receiver: Receiver) -> None:
    agent = await make_agent(webhook_secret=None)

    message = await refusal(agent, {"url": receiver.url, "message": {"x": 1}})

    assert "YMERA_WEBHOOK_SECRET" in message and receiver.requests == []


@pytest.mark.parametrize(("payload", "expected"), [
    ({"message": {"x": 1}}, "needs 'to_agent'"),
    ({"delivery": "webhook", "message": {"x": 1}}, "'url' is required"),
    ({"url": "https://hooks.example.com/x"}, "'message' is required"),
    ({"to_agent": "learning"}, "'message' is required"),
    ({"to_agent": "learning", "message": None}, "'message' is required"),
    ({"to_agent": "learning", "url": "https://hooks.example.com/x", "message": 1}, "both"),
    ({"delivery": "fax", "message": 1}, "'delivery' must be"),
    ({"to_agent": "Learning", "message": 1}, "must name an agent type"),
    ({"to_agent": "x", "message": 1}, "must name an agent type"),
    ({"to_agent": "../etc", "message": 1}, "must name an agent type"),
    ({"to_agent": "learning\n", "message": 1}, "must name an agent type"),
    ({"to_agent": 5, "message": 1}, "must name an agent type"),
    ({"to_agent": "learning", "message": 1, "subject": "s" * 201}, "'subject' must be"),
    ({"to_agent": "learning", "message": "x" * 300_000}, "at most 262144"),
    ({"url": 42, "message": 1}, "must be an http(s) URL"),
    ({"url": "ftp://hooks.example.com/x", "message": 1}, "https:// or http://"),
    ({"url": "https://user:pw@hooks.example.com/x", "message": 1}, "credentials"),
    ({"url": "https://hooks.example.com:99999/x", "message": 1}, "Port out of range"),
    ({"url": "http://1.1.1.1\\@127.0.0.1/", "message": 1}, "not a valid URL"),
    ({"url": "https:///x", "message": 1}, "has no host"),
    ({"url": "https://hooks.example.com/x", "message": 1, "headers": {"X-Ymera-Signature": "s"}},
     "cannot be overridden"),
    ({"url": "https://hooks.example.com/x", "message": 1, "headers": {"Host": "evil"}},
     "cannot be overridden"),
    ({"url": "https://hooks.example.com/x", "message": 1, "headers": {"Webhook-Id": "m"}},
     "cannot be overridden"),
    ({"url": "https://hooks.example.com/x", "message": 1, "headers": {"X-A": "a\r\nB: b"}},
     "single-line"),
    ({"url": "https://hooks.example.com/x", "message": 1, "headers": ["X-A"]},
     "must be an object"),
])
async def test_bad_payloads_are_refused_clearly(make_agent: MakeAgent, payload: dict[str, Any],
                                                expected: str) -> None:
    agent = await make_agent()
    assert expected in await refusal(agent, payload)


def test_backoff_doubles_from_a_fifth_of_a_second_up_to_five() -> None:
    assert [backoff_s(n) for n in range(1, 7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0]
    assert backoff_s(30) == 5.0


def test_retry_after_is_read_in_seconds_or_as_a_date_and_capped() -> None:
    assert retry_after_s("2") == 2.0 and retry_after_s("120") == 10.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    soon = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 5))
    assert 3.0 <= retry_after_s(soon) <= 10.0
