"""What storage can keep: text without NUL characters, JSON nested at most so deep.

PostgreSQL refuses NUL (U+0000) in text and JSON columns, so a NUL anywhere in a task or a
request is refused as input, on every backend alike, before anything is stored.

JSON nested deeper than a limit (`YMERA_MAX_PAYLOAD_DEPTH`, default `DEFAULT_MAX_DEPTH`) is
refused at every entry point, naming the path where the limit is crossed (`depth_excess` for
values, `text_depth_excess` for text, even text too deep for Python's parser); and a stored
value too deep to show (written before the limit existed) is shown as `unreadable_marker`
(`readable`), never failing the page that holds it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from storage.errors import InvalidRequest


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


# ------------------------------------------------------------------------------ nesting depth
# A JSON value's depth: a scalar is 0 deep, a list or an object one more than its deepest item.
DEFAULT_MAX_DEPTH = 64
MAX_DEPTH_CEILING = 128  # the most any configuration allows; every renderer handles this deep
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]")
_EMPTY_PAIR = re.compile(r"\[\]|\{\}")
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]')
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_SHOWN_LEVELS = (4, 3)  # a long path shows its first and last levels
_SHOWN_KEY_CHARS = 32


def text_depth(text: str | bytes, cap: int) -> int:
    """How deep the JSON text nests (0 for a scalar), counted up to `cap + 1` (deeper text
    answers `cap + 1`), without parsing it: text too deep for `json.loads` is measured all the
    same. Strings are skipped; time linear in the text times the depth counted."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    depth = 0
    while brackets and depth <= cap:
        inner = _EMPTY_PAIR.sub("", brackets)  # one level: one pass, never the pairs it makes
        if len(inner) == len(brackets):  # unbalanced: as deep as its deepest opener
            return min(depth + max(_openers_in_a_row(inner), 1), cap + 1)
        brackets, depth = inner, depth + 1
    return min(depth, cap + 1)


def _openers_in_a_row(brackets: str) -> int:
    deepest = level = 0
    for char in brackets:
        level = level + 1 if char in "[{" else max(level - 1, 0)
        deepest = max(deepest, level)
    return deepest


def _shown_path(root: str, parts: list[str | int]) -> str:
    def step(part: str | int) -> str:
        if isinstance(part, int):
            return f"[{part}]"
        if _KEY.fullmatch(part) and len(part) <= _SHOWN_KEY_CHARS:
            return f".{part}"
        clipped = part if len(part) <= _SHOWN_KEY_CHARS else part[:_SHOWN_KEY_CHARS] + "…"
        return f"[{json.dumps(clipped, ensure_ascii=False)}]"

    head, tail = _SHOWN_LEVELS
    if len(parts) <= head + tail + 1:
        return root + "".join(map(step, parts))
    hidden = len(parts) - head - tail
    return (root + "".join(map(step, parts[:head])) + f"…({hidden} levels)…"
            + "".join(map(step, parts[-tail:])))


def depth_excess(value: Any, limit: int, root: str = "payload") -> str | None:
    """None if `value` nests at most `limit` deep; else the path (first levels, last levels)
    of the first list or object below that, like `payload.a.b[0]…(58 levels)….x.y`. Iterative:
    any depth is measured without recursion."""
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        node, parts = stack.pop()
        if isinstance(node, dict):
            items: Any = node.items()
        elif isinstance(node, (list, tuple)):
            items = enumerate(node)
        else:
            continue
        if len(parts) >= limit:
            return _shown_path(root, parts)
        children = [(child, [*parts, key]) for key, child in items
                    if isinstance(child, (dict, list, tuple))]
        stack.extend(reversed(children))
    return None


def text_depth_excess(text: str | bytes, limit: int, root: str = "") -> str | None:
    """`depth_excess` of JSON text, without parsing it (text too deep for `json.loads` too);
    `root` prefixes the path. Linear time; the path is looked for only in text too deep."""
    if text_depth(text, limit) <= limit:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    frames: list[list[Any]] = []  # [is_object, key or index, expecting a key]
    for token in _TOKEN.finditer(text):
        char = token.group()[0]
        if char == '"':
            if frames and frames[-1][0] and frames[-1][2]:
                try:
                    frames[-1][1] = json.loads(token.group())
                except ValueError:
                    frames[-1][1] = token.group()[1:-1]
                frames[-1][2] = False
        elif char in "[{":
            if len(frames) >= limit:
                parts = [frame[1] for frame in frames]
                if not root and parts and isinstance(parts[0], str):
                    root, parts = parts[0], parts[1:]  # a body's field names the path
                return _shown_path(root, parts).lstrip(".") or "the top level"
            frames.append([char == "{", 0, char == "{"])
        elif char in "]}":
            if frames:
                frames.pop()
        elif frames:  # a comma
            if frames[-1][0]:
                frames[-1][2] = True
            else:
                frames[-1][1] += 1
    return "the top level"


def unreadable_marker(limit: int = MAX_DEPTH_CEILING) -> dict[str, str]:
    return {"unreadable": f"nested deeper than {limit} levels"}


def readable(value: Any, limit: int = MAX_DEPTH_CEILING) -> Any:
    """`value` if it can be shown (JSON at most `limit` deep), else `unreadable_marker`: a stored
    value written before the depth limit existed never fails the page that shows it."""
    if not isinstance(value, (dict, list)):
        return value
    try:
        text = json.dumps(value, default=str)
    except (RecursionError, ValueError):
        return unreadable_marker(limit)
    return value if text_depth(text, limit) <= limit else unreadable_marker(limit)


def check_text(kind: str, field: str, value: Any, limit: int) -> None:
    """Nothing if `value` is a non-empty string of at most `limit` characters; else
    `InvalidRequest` naming `field` of the `kind` of record ("message", "workflow")."""
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{kind} {field} must be a non-empty string", {"field": field})
    if len(value) > limit:
        raise InvalidRequest(f"{kind} {field} is {len(value)} characters; at most {limit}",
                             {"field": field})
