"""Asking the `knowledge` agent from a client or the HTTP API: the task requests of each
operation, and a finished task turned into its result or the error it stands for.

Everything the client and the API do with knowledge goes through tasks of the `knowledge` type
(`actors.agents.knowledge`), submitted as the caller's tenant: the agent reads the tenant from
the task, so the same isolation holds whatever the interface. A document too large for a task
payload is staged in parts (`stage_requests`, or the API's one-transaction `KnowledgeUploads.
stage`) before its ingest task is submitted.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from typing import Any

from actors.agents.knowledge import MAX_PART_BYTES, NOT_FOUND_REASON
from actors.errors import PlatformUnavailable
from storage.errors import InvalidRequest, NotFound
from storage.knowledge_uploads import split_parts
from storage.messages import Task, TaskRequest, TaskStatus

AGENT_TYPE = "knowledge"
INLINE_MAX_BYTES = MAX_PART_BYTES
INGEST_TIMEOUT_S = 600.0


def request(operation: str, payload: Mapping[str, Any], tenant: str, *,
            description: str | None = None, timeout_s: float | None = None) -> TaskRequest:
    """A task of the knowledge agent for `operation` with `payload` (None values dropped)."""
    body = {"operation": operation, **{k: v for k, v in payload.items() if v is not None}}
    return TaskRequest(description or f"knowledge {operation}", body, AGENT_TYPE,
                       timeout_s=timeout_s, tenant=tenant,
                       idempotency_key=f"knowledge-{uuid.uuid4().hex}")


def new_upload_id() -> str:
    return uuid.uuid4().hex


def stage_requests(content: bytes, upload_id: str, tenant: str) -> list[TaskRequest]:
    """One `stage` task per part of `content`."""
    return [request("stage", {"upload_id": upload_id, "part": number,
                              "data": base64.b64encode(part).decode()}, tenant)
            for number, part in enumerate(split_parts(content, MAX_PART_BYTES))]


def ingest_request(tenant: str, collection: str, name: str, *, content: bytes | None = None,
                   upload_id: str | None = None, parts: int | None = None,
                   media_type: str | None = None, metadata: Mapping[str, Any] | None = None,
                   document_id: str | None = None,
                   timeout_s: float = INGEST_TIMEOUT_S) -> TaskRequest:
    """The ingest task of a document given inline (`content`, at most `INLINE_MAX_BYTES`) or
    staged (`upload_id` with `parts`)."""
    if (content is None) == (upload_id is None):
        raise ValueError("give the content or the upload id, not both or neither")
    source: dict[str, Any] = (
        {"content_base64": base64.b64encode(content).decode()} if content is not None
        else {"upload_id": upload_id, "parts": parts})
    return request("ingest", {"collection": collection, "name": name, **source,
                              "media_type": media_type,
                              "metadata": dict(metadata) if metadata else None,
                              "document_id": document_id}, tenant,
                   description=f"add {name} to the knowledge collection {collection}",
                   timeout_s=timeout_s)


def outcome(task: Task) -> Any:
    """The result of a finished knowledge task; `InvalidRequest` with the agent's message when
    it refused the input (`NotFound` when it named no collection or document of the tenant), `PlatformUnavailable` when it did not finish or could not succeed
    now (retrying later may help)."""
    if task.status is TaskStatus.SUCCEEDED:
        return task.result
    error = task.error
    if not task.status.is_terminal:
        raise PlatformUnavailable(f"the knowledge task {task.id} is still "
                                  f"{task.status.value}; follow it with `ymera get`",
                                  {"task_id": task.id})
    if error is not None and error.code == "invalid_task_input":
        details = {**(error.details or {}), "task_id": task.id}
        if details.get("reason") == NOT_FOUND_REASON:
            raise NotFound(error.message, details)
        raise InvalidRequest(error.message, details)
    reason = f"{error.code}: {error.message}" if error is not None else task.status.value
    raise PlatformUnavailable(f"the knowledge task {task.id} ended {task.status.value} "
                              f"({reason})", {"task_id": task.id})
