"""Reading a `knowledge` task's payload: each field checked, bad input refused naming the field.

The tenant is never read from a payload: it is the task's (`AgentTask.tenant`)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any

from actors.agent import invalid, json_type
from storage.errors import InvalidRequest
from storage.knowledge_store import (
    MAX_COLLECTION_CHARS, MAX_DOCUMENT_ID_CHARS, MAX_DOCUMENT_NAME_CHARS, check_name,
)

OPERATIONS = ("ingest", "search", "answer", "delete", "list", "stage")
FIELDS: dict[str, frozenset[str]] = {
    "ingest": frozenset({"upload_id", "parts", "text", "content_base64", "name", "media_type",
                         "metadata", "document_id"}),
    "search": frozenset({"query", "k", "where"}),
    "answer": frozenset({"question", "k", "where", "mode", "model"}),
    "delete": frozenset({"document_id", "all"}),
    "list": frozenset({"limit", "cursor"}),
    "stage": frozenset({"upload_id", "part", "data"}),
}
COMMON = frozenset({"operation", "collection"})
ANSWER_MODES = ("auto", "extractive", "grounded")
MAX_K = 50
MAX_QUERY_CHARS = 2000
_WORD = re.compile(r"[a-z0-9][a-z0-9._:-]*")


def operation_of(payload: dict[str, Any]) -> str:
    """The operation named, else `ingest` when the payload carries a document, else `answer`."""
    operation = payload.get("operation")
    if operation is None:
        carries = {"upload_id", "text", "content_base64"} & set(payload)
        operation = "ingest" if carries else "answer"
    if operation not in OPERATIONS:
        raise invalid(f"payload 'operation' must be one of {', '.join(OPERATIONS)}, not "
                      f"{operation!r}", field="operation")
    unknown = sorted(set(payload) - COMMON - FIELDS[operation])
    if unknown:
        raise invalid(f"payload field {unknown[0]!r} is not one that {operation} takes; it "
                      f"takes: {', '.join(sorted(COMMON | FIELDS[operation]))}",
                      field=unknown[0])
    return str(operation)


def checked_name(value: Any, field: str, limit: int) -> str:
    try:
        return check_name(value, field, limit)
    except InvalidRequest as exc:
        raise invalid(f"payload {exc.message}", field=field) from None


def named_collection(payload: dict[str, Any]) -> str | None:
    value = payload.get("collection")
    return None if value is None else checked_name(value, "collection", MAX_COLLECTION_CHARS)


def collection_in(description: str, names: list[str]) -> str | None:
    """The one collection `description` names as a word ("the handbook", "our policies"),
    else None."""
    words = set(_WORD.findall(description.lower()))
    words |= {word[:-1] for word in words if word.endswith("s")}
    named = [name for name in names
             if name.lower() in words or name.lower().rstrip("s") in words]
    return named[0] if len(named) == 1 else None


def text_field(payload: dict[str, Any], field: str, default: str) -> str:
    value = payload.get(field, default)
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"payload '{field}' must be non-empty text (the task's description is "
                      f"used when it is absent), got {json_type(value)}", field=field)
    if len(value) > MAX_QUERY_CHARS:
        raise invalid(f"payload '{field}' has {len(value)} characters; the limit is "
                      f"{MAX_QUERY_CHARS}", field=field)
    return value


def whole(payload: dict[str, Any], field: str, default: int, low: int, high: int) -> int:
    value = payload.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(f"payload '{field}' must be a whole number from {low} to {high}, got "
                      f"{value!r}", field=field)
    return value


def where_of(payload: dict[str, Any]) -> dict[str, Any] | None:
    where = payload.get("where")
    if where is not None and not isinstance(where, dict):
        raise invalid(f"payload 'where' must be an object of metadata values to match, got "
                      f"{json_type(where)}", field="where")
    return where or None


def mode_of(payload: dict[str, Any]) -> str:
    mode = payload.get("mode", "auto")
    if mode not in ANSWER_MODES:
        raise invalid(f"payload 'mode' must be one of {', '.join(ANSWER_MODES)}, not {mode!r}",
                      field="mode")
    return str(mode)


def decoded(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise invalid(f"payload '{field}' must be base64 text, got {json_type(value)}",
                      field=field)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"payload '{field}' is not valid base64", field=field) from None


def document_fields(payload: dict[str, Any], content: bytes | None) -> dict[str, Any]:
    """name, media_type, metadata and document_id of an ingested document, checked."""
    name = payload.get("name")
    if name is None and content is not None and "text" in payload:
        name = f"text-{hashlib.sha256(content).hexdigest()[:12]}.txt"
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_DOCUMENT_NAME_CHARS:
        raise invalid(f"payload 'name' must be the document's file name (1 to "
                      f"{MAX_DOCUMENT_NAME_CHARS} characters, its extension gives its type "
                      "unless 'media_type' does)", field="name")
    media_type = payload.get("media_type")
    if media_type is not None and not isinstance(media_type, str):
        raise invalid("payload 'media_type' must be a string such as \"text/markdown\"",
                      field="media_type")
    metadata = payload.get("metadata", {})
    if not isinstance(metadata, dict):
        raise invalid(f"payload 'metadata' must be an object, got {json_type(metadata)}",
                      field="metadata")
    document_id = payload.get("document_id")
    if document_id is not None:
        document_id = checked_name(document_id, "document_id", MAX_DOCUMENT_ID_CHARS)
    return {"name": name, "media_type": media_type, "metadata": metadata,
            "document_id": document_id}
