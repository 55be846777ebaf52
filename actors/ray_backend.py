"""The only module of the actors layer that calls Ray.

The orchestrator and its managers talk to replicas through `RayBackend` (the
`actors.backend.Backend` protocol), so their logic can be unit-tested with an in-process
stand-in and run unchanged on a real cluster. Ray's exceptions
are translated here: a dead or unreachable actor is `ReplicaLost` (after a node is lost Ray first
reports `ActorUnavailableError`, "may or may not have executed"; both cost the attempt).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import ray
from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    GetTimeoutError,
    ObjectLostError,
    RayActorError,
    RayTaskError,
    TaskCancelledError,
    WorkerCrashedError,
)

from actors.agent import Agent
from actors.config import WebhookSettings
from actors.errors import CallCancelled, CallFailed, CallTimedOut, ReplicaLost
from actors.replica import AgentReplica
from actors.shared_embedder import ROUTER_NAME
from ml.config import RouterConfig
from ml.llm.settings import LlmSettings
from storage.messages import AgentContext, Resources

_LOST = (ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError, ObjectLostError)
CONTROL_CALL_HEADROOM = 4
ROUTER_MAX_CONCURRENCY = 64
LLM_GATEWAY_MAX_CONCURRENCY = 1000
WEBHOOK_DELIVERY_MAX_CONCURRENCY = 100
HEAD_NODE = {"node:__internal_head__": 0.001}


class RemoteCall:
    """A call in flight to an actor: await its result with a deadline, or cancel it."""

    def __init__(self, ref: ray.ObjectRef, actor_name: str) -> None:
        self.ref = ref
        self.actor_name = actor_name

    async def result(self, timeout_s: float | None) -> Any:
        try:
            return await asyncio.wait_for(_awaitable(self.ref), timeout=timeout_s)
        except (asyncio.TimeoutError, GetTimeoutError) as exc:
            raise CallTimedOut(f"{self.actor_name} did not answer within {timeout_s:g}s") from exc
        except TaskCancelledError as exc:
            raise CallCancelled(f"the call to {self.actor_name} was cancelled") from exc
        except _LOST as exc:
            raise ReplicaLost(f"{self.actor_name} was lost: {type(exc).__name__}") from exc
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None) or exc
            raise CallFailed(f"{self.actor_name} failed: {type(cause).__name__}: {cause}") from exc

    def cancel(self) -> None:
        try:
            ray.cancel(self.ref)
        except Exception:  # the call already finished, or its actor is gone
            pass


async def _awaitable(ref: ray.ObjectRef) -> Any:
    return await ref


class RayBackend:
    """Creates, finds, calls and kills detached actors in one Ray namespace."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def create_replica(
        self,
        name: str,
        agent_class: type[Agent],
        resources: Resources,
        concurrency: int,
        context: AgentContext,
        max_payload_bytes: int,
    ) -> Any:
        options: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "lifetime": "detached",
            "max_restarts": 0,
            "max_concurrency": concurrency + CONTROL_CALL_HEADROOM,
            "num_cpus": resources.num_cpus,
        }
        if resources.memory_mb:
            options["memory"] = resources.memory_mb * 1024 * 1024
        if resources.custom:
            options["resources"] = dict(resources.custom)
        return _actor_class(AgentReplica).options(**options).remote(
            agent_class, context, max_payload_bytes)

    def start_router(self, agent_types: dict[str, type[Agent]], config: RouterConfig,
                     database_url: str) -> Any:
        """The namespace's router actor, started if there is none. Ray restarts it forever;
        calls are not retried by Ray (the orchestrator retries decisions itself). With an
        embedded SQLite database it runs on the head node, where the file is; otherwise on a
        node with the custom resources it asks for (`ml`, see `ml.config.ML_RESOURCE`)."""
        options: dict[str, Any] = {
            "name": ROUTER_NAME,
            "namespace": self.namespace,
            "lifetime": "detached",
            "get_if_exists": True,
            "max_restarts": -1,
            "max_task_retries": 0,
            "max_concurrency": ROUTER_MAX_CONCURRENCY,
            "num_cpus": config.num_cpus,
        }
        if database_url.startswith("sqlite"):
            options["resources"] = dict(HEAD_NODE)
        elif config.resources:
            options["resources"] = dict(config.resources)
        from ml.router_service import RouterService  # torch and faiss stay out of this process

        return _actor_class(RouterService).options(**options).remote(
            {name: agent.spec for name, agent in agent_types.items()}, config, database_url)

    def start_llm_gateway(self, settings: LlmSettings, database_url: str, redis_url: str | None,
                          log_format: str, log_level: str) -> Any:
        """The namespace's model gateway actor (`actors.llm_gateway`), started if there is
        none. Ray restarts it forever; calls are not retried by Ray (a model call spends
        tokens). With an embedded SQLite database it runs on the head node, where the file
        is. It takes no CPU: it waits on providers."""
        from actors.llm_gateway import GATEWAY_NAME, LlmGatewayActor

        options: dict[str, Any] = {
            "name": GATEWAY_NAME,
            "namespace": self.namespace,
            "lifetime": "detached",
            "get_if_exists": True,
            "max_restarts": -1,
            "max_task_retries": 0,
            "max_concurrency": LLM_GATEWAY_MAX_CONCURRENCY,
            "num_cpus": 0,
        }
        if database_url.startswith("sqlite"):
            options["resources"] = dict(HEAD_NODE)
        return _actor_class(LlmGatewayActor).options(**options).remote(
            settings, database_url, redis_url, self.namespace, log_format, log_level)

    def start_webhook_delivery(self, settings: WebhookSettings, database_url: str,
                               log_format: str, log_level: str) -> Any:
        """The namespace's webhook delivery actor (`actors.webhook_delivery`), started if there
        is none. Ray restarts it forever (deliveries are durable; one in flight when it died is
        sent again, with the same webhook-id); its calls are not retried by Ray. With an
        embedded SQLite database it runs on the head node, where the file is. It takes no CPU:
        it waits on receivers."""
        from actors.webhook_delivery import DELIVERY_ACTOR_NAME, WebhookDeliveryActor

        options: dict[str, Any] = {
            "name": DELIVERY_ACTOR_NAME,
            "namespace": self.namespace,
            "lifetime": "detached",
            "get_if_exists": True,
            "max_restarts": -1,
            "max_task_retries": 0,
            "max_concurrency": WEBHOOK_DELIVERY_MAX_CONCURRENCY,
            "num_cpus": 0,
        }
        if database_url.startswith("sqlite"):
            options["resources"] = dict(HEAD_NODE)
        return _actor_class(WebhookDeliveryActor).options(**options).remote(
            settings, database_url, log_format, log_level)

    def find_actors(self, prefix: str) -> dict[str, Any]:
        """Live named actors of this namespace whose names start with `prefix`."""
        found = {}
        for entry in ray.util.list_named_actors(all_namespaces=True):
            name = entry["name"]
            if entry["namespace"] == self.namespace and name.startswith(prefix):
                try:
                    found[name] = ray.get_actor(name, namespace=self.namespace)
                except ValueError:
                    continue  # died between listing and lookup
        return found

    def call(self, handle: Any, method: str, *args: Any, name: str = "actor",
             task_name: str | None = None) -> RemoteCall:
        bound = getattr(handle, method)
        if task_name is not None:
            bound = bound.options(name=task_name)
        return RemoteCall(bound.remote(*args), name)

    def kill(self, handle: Any) -> None:
        try:
            ray.kill(handle, no_restart=True)
        except Exception:  # already dead
            pass


@functools.cache
def _actor_class(plain_class: type) -> Any:
    """`plain_class` as a Ray actor class, made once per process."""
    return ray.remote(plain_class)
