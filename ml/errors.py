"""Errors of the routing layer.

    YmeraError (storage.errors)
    └── NoConfidentRoute   no agent type should take this task (or none was named)
"""

from __future__ import annotations

from storage.errors import YmeraError


class NoConfidentRoute(YmeraError):
    code = "no_confident_route"
