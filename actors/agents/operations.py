"""Choosing which operation of a multi-purpose agent a task asks for."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from actors.errors import InvalidTaskInput


@dataclasses.dataclass(frozen=True)
class OperationChooser:
    """Payload "operation" (or one of its aliases) when given; otherwise the one operation
    that both the payload's keys and the description's words point to, then either alone.
    Anything else is an `InvalidTaskInput` that lists the operations."""

    operations: tuple[str, ...]
    aliases: Mapping[str, str]
    described: Mapping[str, re.Pattern[str]]
    hinted_by: Mapping[str, tuple[str, ...]]
    how_to: str = ""

    def choose(self, payload: dict[str, Any], description: str) -> str:
        named = payload.get("operation")
        if named is not None:
            key = named.strip().lower() if isinstance(named, str) else None
            operation = self.aliases.get(key, key) if key is not None else None
            if operation not in self.operations:
                raise self._error(f"unknown operation {named!r}; accepted: "
                                  f"{', '.join(self.operations)}")
            return operation
        described = {name for name, pattern in self.described.items()
                     if pattern.search(description)}
        hinted = {name for name, keys in self.hinted_by.items()
                  if any(key in payload for key in keys)}
        for candidates in (described & hinted, hinted, described):
            if len(candidates) == 1:
                return candidates.pop()
        mentioned = (f" (the description mentions {', '.join(sorted(described))})"
                     if described else "")
        raise self._error(f"cannot tell which operation to run{mentioned}; set payload "
                          f"'operation' to one of: {self.how_to or ', '.join(self.operations)}")

    def _error(self, message: str) -> InvalidTaskInput:
        return InvalidTaskInput(message, {"field": "operation",
                                          "accepted": list(self.operations)})
