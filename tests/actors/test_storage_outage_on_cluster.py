"""A storage outage seen from the Python client on a real cluster: the orchestrator actor's
PostgreSQL (a server of this test's own) stops; blocking and async calls raise the platform's
retryable `PlatformUnavailable`, not Ray's wrapping of the driver's error; once the server is
back, submissions succeed again."""

from __future__ import annotations

import asyncio

import pytest
import ray

from actors.config import PoolConfig
from actors.deploy import start_orchestrator
from actors.errors import PlatformUnavailable
from cluster.client import Client
from storage.database import migrate
from storage.messages import TaskRequest, TaskStatus
from tests.support.platform import test_config as platform_config
from tests.support.private_postgres import private_postgres

pytestmark = pytest.mark.cluster


def test_python_client_sees_a_storage_outage_as_platform_unavailable(ray_cluster) -> None:
    with private_postgres() as server:
        migrate(server.url)
        config = platform_config(server.url, pools={"sleeper": PoolConfig(replicas=1)})
        handle = start_orchestrator(config)
        ray.get(handle.ready.remote(), timeout=120)
        client = Client(handle)
        try:
            done = client.submit("nap", {"seconds": 0}, agent_type="sleeper")
            server.stop()
            with pytest.raises(PlatformUnavailable, match="storage is unavailable"):
                client.submit("nap", {"seconds": 0}, agent_type="sleeper")
            with pytest.raises(PlatformUnavailable):
                client.get(done)
            with pytest.raises(PlatformUnavailable):
                asyncio.run(client.submit_many_async(
                    [TaskRequest("nap", {"seconds": 0}, "sleeper")]))
            server.start()
            again = client.submit("nap", {"seconds": 0}, agent_type="sleeper")
            assert client.wait(again, 30).status is TaskStatus.SUCCEEDED
        finally:
            ray.get(handle.stop_pools.remote(), timeout=60)
            ray.kill(handle, no_restart=True)
