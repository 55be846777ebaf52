"""A tenant's document collections over HTTP, served by the `knowledge` agent.

    GET    /knowledge/collections                                     the caller's collections
    GET    /knowledge/collections/{collection}/documents              a collection's documents
    DELETE /knowledge/collections/{collection}/documents/{document_id}
    POST   /knowledge/documents?collection=NAME[&name=&document_id=&media_type=]   an upload
    POST   /knowledge/search    {"query", "collection"?, "k"?, "where"?}
    POST   /knowledge/answer    {"question", "collection"?, "k"?, "mode"?, "where"?}

Guarantees:
- the tenant is always the caller's (from the credentials); every operation is a task of the
  `knowledge` agent submitted as that tenant, so a collection, document or upload of another
  tenant is never read, listed or changed: naming one is 404, like naming nothing;
- reading takes `knowledge:read`, uploading and deleting `knowledge:write`;
- an upload is `multipart/form-data` (the document in the field `file`, optional fields `name`,
  `metadata` as a JSON object, `document_id`, `media_type`) or the document's raw bytes (with
  `name` in the query). Its body may be up to `knowledge_max_upload_bytes` (20 MB by default),
  larger is 413 before it is read further. A document too large for a task payload is staged
  in storage in one transaction, and only then is its ingest task submitted: an accepted upload
  is never lost. Uploads whose ingest task never came are purged after a day;
- every route waits for its task up to `wait_max_s`: a finished task answers with its result
  (an upload 201, with `Location` naming the task), an unfinished one 202 with the task's id
  and `Location`; a document the agent refuses (type, corrupt PDF, no text) is 400 naming it,
  and nothing of it is stored.
"""

from __future__ import annotations

import json
from email import policy
from email.parser import BytesParser
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from actors import knowledge_requests as kr
from actors.agents.knowledge import MAX_PART_BYTES
from actors.logs import bind_log_context
from serve_apps.errors import PayloadTooLarge
from serve_apps.knowledge_schemas import COLLECTION_PATTERN, AnswerBody, SearchBody
from serve_apps.routes.access import API_PREFIX, Caller, authorize, services
from storage.errors import InvalidRequest
from storage.knowledge_uploads import KnowledgeUploads, split_parts
from storage.messages import TaskRequest

UPLOAD_PATH: Final = "/knowledge/documents"
FORM_FIELDS: Final = frozenset({"file", "name", "metadata", "document_id", "media_type"})
Collection = Annotated[str, Query(pattern=COLLECTION_PATTERN)]
CollectionName = Annotated[str, Path(pattern=COLLECTION_PATTERN)]
DocumentId = Annotated[str, Path(pattern=COLLECTION_PATTERN)]

PENDING: Final[dict[int | str, dict[str, Any]]] = {
    202: {"description": "Not finished within `wait_max_s`: `{\"task_id\", \"status\"}`; "
                         "`Location` names the task to follow"}}

router = APIRouter(tags=["knowledge"], dependencies=[Depends(authorize)], responses=PENDING)


async def _run(request: Request, response: Response, task_request: TaskRequest,
               finished_status: int = 200) -> dict[str, Any]:
    """Submit the task and wait for it up to `wait_max_s`: its result, or 202 with its id."""
    svc = services(request)
    task = await svc.port.accept(task_request, svc.config.wait_max_s)
    bind_log_context(task_id=task.id, agent_type=task.agent_type)
    if not task.status.is_terminal:
        response.status_code = 202
        response.headers["Location"] = f"{API_PREFIX}/tasks/{task.id}"
        return {"task_id": task.id, "status": task.status.value}
    result: dict[str, Any] = kr.outcome(task)
    response.status_code = finished_status
    return {**result, "task_id": task.id}


@router.get("/knowledge/collections", summary="Your tenant's knowledge collections")
async def collections(request: Request, response: Response, caller: Caller,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                      cursor: Annotated[str | None, Query(max_length=500)] = None
                      ) -> dict[str, Any]:
    return await _run(request, response, kr.request(
        "list", {"limit": limit, "cursor": cursor}, caller.tenant))


@router.get("/knowledge/collections/{collection}/documents",
            summary="The documents of one of your collections")
async def documents(collection: CollectionName, request: Request, response: Response, caller: Caller,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    cursor: Annotated[str | None, Query(max_length=500)] = None
                    ) -> dict[str, Any]:
    return await _run(request, response, kr.request(
        "list", {"collection": collection, "limit": limit, "cursor": cursor}, caller.tenant))


@router.delete("/knowledge/collections/{collection}/documents/{document_id}",
               summary="Delete a document: its chunks leave search at once")
async def delete_document(collection: CollectionName, document_id: DocumentId,
                          request: Request,
                          response: Response, caller: Caller) -> dict[str, Any]:
    return await _run(request, response, kr.request(
        "delete", {"collection": collection, "document_id": document_id}, caller.tenant))


@router.post("/knowledge/search", summary="The best chunks of a collection for a query")
async def search(body: SearchBody, request: Request, response: Response,
                 caller: Caller) -> dict[str, Any]:
    return await _run(request, response, kr.request(
        "search", body.model_dump(), caller.tenant, description=body.query))


@router.post("/knowledge/answer", summary="An answer from a collection, with citations")
async def answer(body: AnswerBody, request: Request, response: Response,
                 caller: Caller) -> dict[str, Any]:
    return await _run(request, response, kr.request(
        "answer", body.model_dump(), caller.tenant, description=body.question),
        finished_status=200)


@router.post(UPLOAD_PATH, summary="Add a document to a collection (multipart or raw bytes)",
             status_code=201)
async def upload(request: Request, response: Response, caller: Caller,
                 collection: Collection = "default",
                 name: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
                 document_id: Annotated[str | None,
                                        Query(pattern=COLLECTION_PATTERN)] = None,
                 media_type: Annotated[str | None, Query(max_length=64)] = None
                 ) -> dict[str, Any]:
    svc = services(request)
    body = await request.body()
    limit = svc.config.knowledge_max_upload_bytes
    if len(body) > limit:
        raise PayloadTooLarge(f"the document is {len(body)} bytes; the limit is {limit}",
                              {"limit_bytes": limit})
    fields: dict[str, Any] = {"name": name, "document_id": document_id,
                              "media_type": media_type, "metadata": None}
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        content, form = _multipart(content_type, body)
        fields.update({k: v for k, v in form.items() if v is not None})
    else:
        content = body
    if not content:
        raise InvalidRequest("the upload has no document: send its bytes, or multipart "
                             "form data with the field 'file'", {"field": "file"})
    if not fields["name"]:
        raise InvalidRequest("name the document (query 'name', or the file's name in the "
                             "form): its extension gives its type", {"field": "name"})
    options = {"media_type": fields["media_type"], "metadata": fields["metadata"],
               "document_id": fields["document_id"]}
    if len(content) <= kr.INLINE_MAX_BYTES:
        ingest = kr.ingest_request(caller.tenant, collection, fields["name"], content=content,
                                   **options)
    else:
        upload_id = kr.new_upload_id()
        parts = await KnowledgeUploads(svc.auth_store.engine).stage(
            caller.tenant, upload_id, split_parts(content, MAX_PART_BYTES))
        ingest = kr.ingest_request(caller.tenant, collection, fields["name"],
                                   upload_id=upload_id, parts=parts, **options)
    result = await _run(request, response, ingest, finished_status=201)
    if response.status_code == 201:
        response.headers["Location"] = f"{API_PREFIX}/tasks/{result['task_id']}"
    return result


def _multipart(content_type: str, body: bytes) -> tuple[bytes, dict[str, Any]]:
    """The document and the form's other fields of a multipart/form-data body."""
    message = BytesParser(policy=policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode("latin-1") + body)
    if not message.is_multipart():
        raise InvalidRequest("the multipart body could not be read", {"field": "file"})
    content: bytes | None = None
    form: dict[str, Any] = {}
    for part in message.iter_parts():
        field = part.get_param("name", header="content-disposition")
        if not isinstance(field, str) or field not in FORM_FIELDS:
            raise InvalidRequest(f"form field {field!r} is not one an upload takes: "
                                 f"{', '.join(sorted(FORM_FIELDS))}", {"field": str(field)})
        data = part.get_payload(decode=True)
        data = data if isinstance(data, bytes) else b""
        if field == "file":
            content = data
            form.setdefault("name", part.get_filename())
            continue
        text = data.decode("utf-8", errors="replace")
        form[field] = _metadata(text) if field == "metadata" else text
    if content is None:
        raise InvalidRequest("the form has no field 'file' holding the document",
                             {"field": "file"})
    return content, form


def _metadata(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"form field 'metadata' is not JSON: {exc}",
                             {"field": "metadata"}) from None
    if not isinstance(value, dict):
        raise InvalidRequest("form field 'metadata' must be a JSON object",
                             {"field": "metadata"})
    return value
