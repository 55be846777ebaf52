"""What storage can keep: text without NUL characters.

PostgreSQL refuses NUL (U+0000) in text and JSON columns, so a NUL anywhere in a task or a
request is refused as input, on every backend alike, before anything is stored.
"""

from __future__ import annotations

from typing import Any


def nul_location(value: Any, where: str = "") -> str | None:
    """Where in a JSON value a string (or key) holds a NUL character, or None. Storage cannot
    keep NUL in text (PostgreSQL refuses it), so it is refused as input everywhere."""
    if isinstance(value, str):
        return where or "value" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                return f"{where}.{key!r}" if where else repr(key)
            found = nul_location(item, f"{where}.{key}" if where else str(key))
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = nul_location(item, f"{where}[{index}]")
            if found:
                return found
    return None
