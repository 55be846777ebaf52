"""The ingress's ASGI middleware, outermost first: request context, body limit, NUL guard,
security headers.

- `RequestContextMiddleware` gives every request an id (a sane incoming `X-Request-ID`, else a
  new one), echoes it on every response, puts it in the log context (`actors.logs`) for the
  whole request, so every log line of the request carries it, and gives it to error envelopes
  (`current_request_id`); it logs one access line per request, records the request in the API
  metrics (`serve_apps.metrics`: the matched route's template, else `unmatched`), and is the
  last line of defence: an exception nothing else handled is logged with the id and answered
  with the generic 500 envelope, never a traceback.
- `BodyLimitMiddleware` refuses a body above the limit with the 413 envelope, whether it says
  so in `Content-Length` or streams more than it declared, and a JSON body nested deeper than
  `max_depth` below its top level with the 400 envelope naming the path (measured without
  parsing, so a body too deep for Python's parser is refused the same way); the app never sees
  such a body.
- `NulGuardMiddleware` refuses a path or query string holding a NUL character with the 400
  envelope (bodies are checked by `schemas.StrictBody`).
- `SecurityHeadersMiddleware` adds `nosniff`, `DENY` framing, `no-referrer`, `no-store` caching,
  and a CSP that allows nothing on every route but the interactive docs.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actors.logs import LogContextFilter, current_log_context, log_context
from serve_apps import http_errors
from serve_apps.errors import PayloadTooLarge
from serve_apps.metrics import UNMATCHED, api_metrics
from storage.errors import InvalidRequest
from storage.storable import DEFAULT_MAX_DEPTH, text_depth_excess

REQUEST_ID_HEADER: Final = "x-request-id"
DOCS_PATHS: Final = ("/docs", "/redoc", "/openapi.json")
API_CSP: Final = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")

logger = logging.getLogger("serve_apps.api")
logger.addFilter(LogContextFilter())  # the request id on this logger's records, handler or not


def current_request_id() -> str | None:
    """The id of the request being served in this context, or None outside a request."""
    return current_log_context().get("request_id")


async def send_envelope(send: Send, exc: BaseException, request_id: str | None) -> None:
    """Answer `exc` with its status, headers and envelope (for use before the app responds)."""
    body = json.dumps(http_errors.envelope(exc, request_id)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in http_errors.headers_for(exc).items()]
    await send({"type": "http.response.start", "status": http_errors.status_for(exc),
                "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    """`echo_kept_id=False` leaves out the `X-Request-ID` response header when the request's
    own id was kept, for a proxy that echoes it already (Ray Serve's does)."""

    def __init__(self, app: ASGIApp, echo_kept_id: bool = True) -> None:
        self.app = app
        self.echo_kept_id = echo_kept_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, REQUEST_ID_HEADER)
        kept = bool(incoming and _SANE_REQUEST_ID.fullmatch(incoming))
        request_id = incoming if kept else uuid.uuid4().hex
        echo = self.echo_kept_id or not kept
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.monotonic()
        status = {"code": 500, "sent": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["sent"] = message["status"], True
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != REQUEST_ID_HEADER.encode()]
                if echo:
                    headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        with log_context(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                logger.exception("unhandled error serving %s %s", scope["method"], scope["path"])
                if status["sent"]:
                    raise
                await send_envelope(send_with_id, exc, request_id)
            finally:
                elapsed_s = time.monotonic() - started
                api_metrics().record_request(route_template(scope), scope["method"],
                                             status["code"], elapsed_s)
                logger.info("%s %s %s %.1fms", scope["method"], scope["path"], status["code"],
                            elapsed_s * 1000)


def route_template(scope: Scope) -> str:
    """The whole path template of the route that matched this request (known once routing
    ran, prefixes of included routers included), else `UNMATCHED`: never the raw path."""
    # FastAPI >= 0.13x keeps an included router's own route in scope["route"] (its path has no
    # prefix) and the route as included, with its whole template, in its effective context.
    fastapi_state = scope.get("fastapi")
    included = (fastapi_state.get("effective_route_context")
                if isinstance(fastapi_state, dict) else None)
    for source in (included, scope.get("route")):
        template = getattr(source, "path_format", None) or getattr(source, "path", None)
        if isinstance(template, str) and template:
            return template
    return UNMATCHED


class NulGuardMiddleware:
    """Refuses a path or query string holding a NUL character (`%00`) with the 400 envelope,
    before routing: storage cannot look such a value up (see `storage.storable`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and ("\x00" in scope["path"]
                                        or b"%00" in scope.get("query_string", b"")):
            await send_envelope(send, InvalidRequest(
                "the path or query string holds a NUL character (%00), which is not allowed"),
                scope.get("state", {}).get("request_id"))
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Reads the whole body (at most `max_body_bytes`, or for a (method, path) of
    `larger_limits` its own limit, such as a document upload; nested at most `max_depth` below
    its top level when it is JSON) before the app runs and replays it."""

    def __init__(self, app: ASGIApp, max_body_bytes: int,
                 max_depth: int = DEFAULT_MAX_DEPTH,
                 larger_limits: dict[tuple[str, str], int] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_depth = max_depth
        self.larger_limits = dict(larger_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = scope.get("state", {}).get("request_id")
        limit = self.larger_limits.get((scope.get("method", ""), scope.get("path", "")),
                                       self.max_body_bytes)
        declared = _header(scope, "content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await send_envelope(send, self._too_large(limit), request_id)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size > limit:
                await send_envelope(send, self._too_large(limit), request_id)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and self._may_be_json(scope):
            too_deep = text_depth_excess(body, self.max_depth + 1)  # +1: the body's own level
            if too_deep is not None:
                await send_envelope(send, self._too_deep(too_deep), request_id)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    def _may_be_json(scope: Scope) -> bool:
        content_type = _header(scope, "content-type")
        return content_type is None or "json" in content_type.lower()

    def _too_deep(self, path: str) -> InvalidRequest:
        field = path.split(".", 1)[0].split("[", 1)[0] or "body"
        return InvalidRequest(
            f"{field} is nested deeper than {self.max_depth} levels at {path}",
            {"field": field, "path": path, "limit": self.max_depth})

    @staticmethod
    def _too_large(limit: int) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body exceeds {limit} bytes", {"limit_bytes": limit})


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_docs = scope["path"].endswith(DOCS_PATHS) or "/docs/" in scope["path"]

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for name, value in _security_headers(is_docs):
                    if name not in present:
                        headers.append((name, value))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_secured)


def _security_headers(is_docs: bool) -> list[tuple[bytes, bytes]]:
    headers = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
               (b"referrer-policy", b"no-referrer")]
    if not is_docs:
        headers += [(b"cache-control", b"no-store"),
                    (b"content-security-policy", API_CSP.encode())]
    return headers


def _header(scope: Scope, name: str) -> Any:
    wanted = name.encode()
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None
