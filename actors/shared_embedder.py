"""The embedding model as the router's service: what agent replicas encode texts with.

The namespace's router actor (`ml.router_service`) is the platform's one process that loads torch
and the model. `RemoteEmbedder` asks it (`RouterService.embed`) and gives back exactly what a local
`ml.embeddings.Embedder` would, through the same surface (`encode`, `dimension`; both are a
`TextEncoder`). `text_encoder(context)` chooses for an agent: the router's model when the replica
runs inside Ray, its namespace has a router and the platform's `shared_embeddings` setting is not
off (`YMERA_SHARED_EMBEDDINGS`); otherwise a model of this process's own
(`ml.embeddings.embedder()`: agents run in-process by tests, a platform without the router, or
the setting off).

Guarantees: while the router restarts (its actor died or is unreachable, or its name is not
registered yet) `encode` tries again for up to `retry_for_s`, then raises
`EmbeddingModelUnavailable`; so does a router whose model cannot load or that does not answer
within `call_timeout_s`. A replica records that error as a crash of the attempt, which is retried.
Ray is imported only inside it, so importing this module (as the built-in agents do) loads
neither Ray nor torch.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ml.embeddings import MODEL_NAME, TextEncoder
from ml.errors import EmbeddingModelUnavailable, RouterUnavailable
from storage.messages import AgentContext

ROUTER_NAME = "router"  # the router actor's name in its namespace (`actors.ray_backend` starts it)
SHARED_SETTING = "shared_embeddings"
REQUEST_TEXTS = 64  # texts per call to the router, so that one call stays short
RETRY_FOR_S = 60.0  # a restarted router loads the model before it answers
RETRY_DELAYS_S = (0.1, 0.25, 0.5, 1.0, 2.0)
CALL_TIMEOUT_S = 120.0


def text_encoder(context: AgentContext | None) -> TextEncoder:
    """The encoder an agent hosted with `context` uses (see the module). Blocking: it may look
    the router up, or load the model."""
    if context is not None and context.settings.get(SHARED_SETTING) is not False:
        if find_router(context.namespace) is not None:
            return RemoteEmbedder(context.namespace)
    from ml.embeddings import embedder

    return embedder()


def find_router(namespace: str) -> Any | None:
    """The router actor of `namespace` when this process runs inside Ray and it is registered,
    else None."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    try:
        return ray.get_actor(ROUTER_NAME, namespace=namespace)
    except ValueError:
        return None


class RemoteEmbedder:
    """The embedding model of the router of Ray namespace `namespace` (see the module).
    Safe to call from several threads."""

    def __init__(self, namespace: str, *, retry_for_s: float = RETRY_FOR_S,
                 call_timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.namespace = namespace
        self.retry_for_s = retry_for_s
        self.call_timeout_s = call_timeout_s
        self._router: Any = None
        self._dimension: int | None = None

    @property
    def dimension(self) -> int:
        """The length of every vector (asked of the router once)."""
        if self._dimension is None:
            self._dimension = int(self.encode([]).shape[1])
        return self._dimension

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """A (len(texts), dimension) float32 array of unit rows in input order: the router's
        `Embedder.encode(texts)`."""
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts, not one string")
        texts = list(texts)
        if not all(isinstance(text, str) for text in texts):
            raise TypeError("encode takes texts (strings)")
        if len(texts) <= REQUEST_TEXTS:
            return self._embed(texts)
        return np.concatenate([self._embed(texts[start:start + REQUEST_TEXTS])
                               for start in range(0, len(texts), REQUEST_TEXTS)])

    def _embed(self, texts: list[str]) -> np.ndarray:
        import ray
        from ray.exceptions import GetTimeoutError, RayError, RayTaskError

        deadline = time.monotonic() + self.retry_for_s
        failures = 0
        while True:
            if self._router is None:
                self._router = find_router(self.namespace)
            router = self._router
            if router is None:
                why = "no router is registered"
            else:
                call: Any = None
                try:
                    call = router.embed.remote(texts)
                    return np.asarray(ray.get(call, timeout=self.call_timeout_s),
                                      dtype=np.float32)
                except RayTaskError as exc:
                    raise _translated(exc) from exc
                except GetTimeoutError as exc:
                    with contextlib.suppress(Exception):  # it may have finished meanwhile
                        ray.cancel(call)
                    raise self._unavailable(
                        f"the router did not embed {len(texts)} texts within "
                        f"{self.call_timeout_s:g}s") from exc
                except RayError as exc:  # died under the call, unreachable, or restarting
                    self._router = None
                    why = f"{type(exc).__name__}: {exc}".splitlines()[0]
            delay = RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S) - 1)]
            failures += 1
            if time.monotonic() + delay > deadline:
                raise self._unavailable(
                    f"the router, which holds the embedding model, did not answer within "
                    f"{self.retry_for_s:g}s ({why})")
            time.sleep(delay)

    def _unavailable(self, message: str) -> EmbeddingModelUnavailable:
        return EmbeddingModelUnavailable(
            f"{message}; Ray namespace {self.namespace!r}",
            {"model": MODEL_NAME, "namespace": self.namespace})


def _translated(exc: Any) -> EmbeddingModelUnavailable:
    """The router's own failure to embed as the platform's error."""
    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, EmbeddingModelUnavailable):
        return cause
    if isinstance(cause, RouterUnavailable):
        return EmbeddingModelUnavailable(str(cause), {"model": MODEL_NAME})
    return EmbeddingModelUnavailable(
        f"the router failed to embed: {type(cause).__name__}: {cause}", {"model": MODEL_NAME})
