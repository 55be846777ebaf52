"""Errors of the routing and embedding layer.

    YmeraError (storage.errors)
    ├── NoConfidentRoute             no agent type should take this task (or none was named)
    ├── EmbeddingModelUnavailable    the bundled embedding model cannot be loaded in this process
    └── RouterUnavailable            the router actor could not start (its model is unusable)
"""

from __future__ import annotations

from storage.errors import YmeraError


class NoConfidentRoute(YmeraError):
    code = "no_confident_route"


class EmbeddingModelUnavailable(YmeraError):
    code = "embedding_model_unavailable"


class RouterUnavailable(YmeraError):
    code = "router_unavailable"
