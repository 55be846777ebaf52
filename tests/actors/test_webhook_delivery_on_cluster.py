"""The webhook delivery actor on the session's Ray cluster: started as the platform starts it,
killed with SIGKILL while a receiver is still answering, restarted by Ray, and the delivery
sent again with the same webhook-id (at least once; the receiver can drop the duplicate)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.exceptions import RayActorError
from standardwebhooks import Webhook

from actors.config import WebhookSettings
from actors.ray_backend import RayBackend
from actors.webhook_delivery import find_webhook_delivery
from storage.database import migrate_async
from storage.messages import utcnow
from storage.webhook_outbox import Notification, enqueue
from storage.webhook_store import WebhookStore
from tests.support.webhooks import Receiver, serving

pytestmark = pytest.mark.cluster

RESTART_TIMEOUT_S = 60.0
SETTINGS = WebhookSettings(retry_base_s=0.1, retry_max_s=0.5, timeout_s=60.0,
                           poll_interval_s=0.1, allowed_networks=("127.0.0.1/32",))


def _pid(_actor: Any) -> int:
    return os.getpid()


async def _until(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:g}s")
        await asyncio.sleep(0.1)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[tuple[str, WebhookStore]]:
    url = f"sqlite:///{tmp_path / 'webhooks.db'}"
    await migrate_async(url)
    async with await WebhookStore.open(url) as opened:
        yield url, opened


async def test_a_delivery_cut_off_by_a_sigkill_is_sent_again_with_the_same_id(
    ray_cluster: None, store: tuple[str, WebhookStore],
) -> None:
    database_url, webhooks = store
    namespace = f"webhooks-test-{uuid.uuid4().hex[:8]}"
    tenant = f"sigkill-{uuid.uuid4().hex[:8]}"  # its own label value in the shared metrics
    async with serving(Receiver(delays=[120.0])) as receiver:  # the first answer never comes
        _, secret = await webhooks.create_subscription(tenant, receiver.url, ["task.*"])
        handle = RayBackend(namespace).start_webhook_delivery(SETTINGS, database_url, "text",
                                                              "INFO")
        try:
            await handle.ready.remote()
            found = find_webhook_delivery(namespace)
            assert found is not None and found._actor_id == handle._actor_id
            async with webhooks.engine.begin() as connection:
                await enqueue(connection, [Notification(
                    tenant, "task.succeeded", {"task_id": "k" * 32, "status": "succeeded"},
                    task_id="k" * 32)], utcnow())
            handle.wake.remote()

            async def first_arrived() -> bool:
                return len(receiver.requests) >= 1

            await _until(first_arrived, 30, "the first delivery")
            old_pid = await handle.__ray_call__.remote(_pid)
            os.kill(old_pid, signal.SIGKILL)

            async def delivered() -> bool:
                found, _ = await webhooks.list_deliveries(tenant)
                return bool(found) and found[0].status == "delivered"

            await _until(delivered, RESTART_TIMEOUT_S, "the delivery after the restart")
            assert await _answering_pid(handle) != old_pid
        finally:
            ray.kill(handle, no_restart=True)

    (delivery,), _ = await webhooks.list_deliveries(tenant)
    _, attempts = await webhooks.get_delivery(tenant, delivery.id)
    ids = [headers["webhook-id"] for headers, _ in receiver.requests]
    assert len(ids) == 2 and set(ids) == {delivery.id}
    assert receiver.requests[0][1] == receiver.requests[1][1]  # the same body, byte for byte
    for headers, body in receiver.requests:
        assert Webhook(secret).verify(body, headers)["data"]["task_id"] == "k" * 32
    # the killed attempt was never recorded: the one that arrived is attempt 1
    assert [(a.number, a.status_code) for a in attempts] == [(1, 200)]

    async def counted() -> bool:
        text = await asyncio.to_thread(_scrape)
        return any(line.startswith("ray_ymera_webhook_deliveries_total{")
                   and f'tenant="{tenant}"' in line and 'outcome="delivered"' in line
                   for line in text.splitlines())

    await _until(counted, 20, "the delivery's metric")


def _scrape() -> str:
    port = ray.nodes()[0]["MetricsExportPort"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


async def _answering_pid(handle: Any) -> int:
    deadline = time.monotonic() + RESTART_TIMEOUT_S
    while True:
        try:
            return int(await handle.__ray_call__.remote(_pid))
        except RayActorError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
