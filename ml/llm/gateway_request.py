"""What a model gateway call asks, checked: `parse_request` turns the request dict that crosses
into the gateway (from the `llm` agent, the planner, an operator) into a `GatewayRequest`.

    {"tenant": str, "task_id": str | None, "group": str | None,       # None: the default group
     "messages": [{"role": "system" | "user" | "assistant", "content": str}, ...],
     "max_tokens": int | None, "temperature": float = 0.0,           # None: settings.max_tokens
     "cache_ttl_s": float | None}                                      # None: not cached

Guarantees: a request that parses is complete and within the settings' bounds; anything else
is an `InvalidRequest` whose message names the field (`messages[1].role`, `max_tokens`, ...)
and whose `details` carry it. Unknown fields are refused, so a typo never passes silently. An
unknown group is refused with the configured groups listed. Message contents are never quoted
in an error (they may be private).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ml.llm.settings import DEFAULT_ESTIMATE_CHARS_PER_TOKEN, LlmSettings
from ml.llm.types import ROLES, Message
from storage.errors import InvalidRequest

FIELDS: Final = ("tenant", "task_id", "group", "messages", "max_tokens", "temperature",
                 "cache_ttl_s")
MAX_TEMPERATURE: Final = 2.0
MAX_TENANT_CHARS: Final = 64
MAX_TASK_ID_CHARS: Final = 128


@dataclass(frozen=True)
class GatewayRequest:
    """One checked model call of `tenant` (for `task_id`, when it runs for a task)."""

    tenant: str
    task_id: str | None
    group: str
    messages: tuple[Message, ...]
    max_tokens: int
    temperature: float
    cache_ttl_s: float | None

    @property
    def input_estimate(self) -> int:
        """The prompt's tokens, estimated from its characters."""
        return estimate_tokens(sum(len(m.content) for m in self.messages))

    @property
    def budget_estimate(self) -> int:
        """The most this call is expected to cost: its prompt's estimate and every token it
        may answer with."""
        return self.input_estimate + self.max_tokens


def estimate_tokens(chars: int) -> int:
    """Tokens of `chars` characters of text, estimated (about four characters a token)."""
    return math.ceil(chars / DEFAULT_ESTIMATE_CHARS_PER_TOKEN)


def _refuse(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {message}", {"field": field})


def _number(raw: Mapping[str, Any], field: str) -> float | None:
    value = raw.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _refuse(field, f"must be a number, not {type(value).__name__}")
    return float(value)


def _text(raw: Mapping[str, Any], field: str, limit: int, required: bool) -> str | None:
    value = raw.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _refuse(field, "is required (a non-empty string)" if required
                      else "must be a non-empty string or null")
    if len(value) > limit:
        raise _refuse(field, f"must be at most {limit} characters, not {len(value)}")
    return value


def _messages(value: object) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise _refuse("messages", "must be a non-empty list of {\"role\", \"content\"} objects")
    messages = []
    for index, entry in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(entry, Mapping):
            raise _refuse(where, "must be an object with 'role' and 'content'")
        unknown = sorted(str(key) for key in set(entry) - {"role", "content"})
        if unknown:
            raise _refuse(where, f"unknown field(s) {', '.join(unknown)}")
        role, content = entry.get("role"), entry.get("content")
        if role not in ROLES:
            raise _refuse(f"{where}.role", f"must be one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise _refuse(f"{where}.content", "must be a string")
        messages.append(Message(str(role), content))
    if all(m.role == "system" for m in messages):
        raise _refuse("messages", "needs at least one user or assistant message")
    return tuple(messages)


def parse_request(raw: object, settings: LlmSettings) -> GatewayRequest:
    """The request `raw` describes, checked against `settings` (see the module's docstring)."""
    if not isinstance(raw, Mapping):
        raise InvalidRequest(f"a model request must be an object, not {type(raw).__name__}")
    unknown = sorted(str(key) for key in set(raw) - set(FIELDS))
    if unknown:
        raise InvalidRequest(f"unknown request field(s) {', '.join(unknown)}; known: "
                             f"{', '.join(FIELDS)}", {"fields": unknown})
    tenant = _text(raw, "tenant", MAX_TENANT_CHARS, required=True)
    assert tenant is not None
    group = _text(raw, "group", 128, required=False) or settings.default_group
    if group not in settings.groups:
        raise InvalidRequest(f"group: no model group named {group!r}; configured: "
                             f"{', '.join(settings.groups)}",
                             {"field": "group", "groups": list(settings.groups)})
    max_tokens = raw.get("max_tokens")
    if max_tokens is None:
        max_tokens = settings.max_tokens
    elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise _refuse("max_tokens", f"must be an integer, not {type(max_tokens).__name__}")
    if not 1 <= max_tokens <= settings.max_tokens_limit:
        raise _refuse("max_tokens", f"must be between 1 and {settings.max_tokens_limit}, "
                                    f"not {max_tokens}")
    temperature = _number(raw, "temperature")
    temperature = 0.0 if temperature is None else temperature
    if not 0.0 <= temperature <= MAX_TEMPERATURE:
        raise _refuse("temperature", f"must be between 0 and {MAX_TEMPERATURE:g}, "
                                     f"not {temperature:g}")
    cache_ttl_s = _number(raw, "cache_ttl_s")
    if cache_ttl_s is not None and not 0 < cache_ttl_s <= settings.cache_max_ttl_s:
        raise _refuse("cache_ttl_s", f"must be above 0 and at most {settings.cache_max_ttl_s:g} "
                                     f"seconds, not {cache_ttl_s:g}")
    return GatewayRequest(
        tenant=tenant, task_id=_text(raw, "task_id", MAX_TASK_ID_CHARS, required=False),
        group=group, messages=_messages(raw.get("messages")), max_tokens=max_tokens,
        temperature=temperature, cache_ttl_s=cache_ttl_s)
