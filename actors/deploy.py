"""Where the orchestrator becomes a Ray actor: the one place `ray.remote` is applied to it.

The orchestrator is a detached, named actor that Ray restarts forever; calls in flight when it
dies are retried on the new incarnation (submissions carry idempotency keys, so a retried
submission never creates a second task). It is pinned to the head node, next to the embedded
SQLite database.
"""

from __future__ import annotations

from typing import Any

import ray

from actors.cluster_facts import ORCHESTRATOR_NAME
from actors.config import OrchestratorConfig
from actors.errors import PlatformUnavailable
from actors.orchestrator import Orchestrator

MAX_CONCURRENT_CALLS = 10_000
CALL_RETRIES = 5


def start_orchestrator(config: OrchestratorConfig) -> Any:
    """The running orchestrator of `config.namespace`, started if there is none."""
    return (
        ray.remote(Orchestrator)
        .options(
            name=ORCHESTRATOR_NAME,
            namespace=config.namespace,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_task_retries=CALL_RETRIES,
            max_concurrency=MAX_CONCURRENT_CALLS,
            num_cpus=0,
            resources={"node:__internal_head__": 0.001},
        )
        .remote(config)
    )


def find_orchestrator(namespace: str) -> Any:
    """The running orchestrator's handle, or `PlatformUnavailable`."""
    try:
        return ray.get_actor(ORCHESTRATOR_NAME, namespace=namespace)
    except ValueError:
        raise PlatformUnavailable(
            f"no orchestrator is running in Ray namespace {namespace!r}: start one with `ymera up`"
        ) from None
