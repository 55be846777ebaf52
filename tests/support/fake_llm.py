"""Fake model providers over real HTTP: an OpenAI-compatible and an Anthropic-compatible server.

Both listen on 127.0.0.1 (a free port), answer from a script, one step per request, and record
every request (path, headers, JSON body). A step is a `Reply` (an answer, streamed or not as the
request asks) or a `Fault`:

    server.script([Reply("hi", usage=(3, 2)), Fault.status(429, retry_after=1), Fault.cut_after(2)])

- `Fault.status(code, retry_after=..., message=...)`  an HTTP error in the provider's error format
- `Fault.slow(delay_s, reply)`                        the reply, after a delay before the headers
- `Fault.cut_after(n, reply)`                         streams n text chunks, then drops the
  connection (a non-streamed request gets its headers and half a body)
- `Fault.end_early(n, reply)`                         streams n text chunks, then ends the stream
  cleanly but without the provider's end marker (no finish reason, `[DONE]` or `message_stop`)
- `Fault.drop()`                                      closes the connection without an answer
- `Fault.malformed(after=n)`                          invalid JSON (as the body, or as the data of
  the stream's event after n good chunks)
- `Fault.error_event(after=n, kind=...)`              a stream that reports an error in-band
- `Fault.usage_missing(text)` (= `Reply(text, usage=None)`)  an answer without usage

When the script runs out the server answers `default` (a short reply; `None` makes it answer 500).
Streams follow the providers' formats: OpenAI `data:` chunks, `[DONE]`, usage in a last chunk when
`stream_options.include_usage`; Anthropic's `message_start` ... `message_stop` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web


@dataclass(frozen=True)
class Reply:
    """An answer. `chunks` is how it streams (default: word by word); `usage` is (input, output)
    tokens, None to leave usage out."""

    text: str
    usage: tuple[int, int] | None = (3, 2)
    chunks: tuple[str, ...] | None = None
    finish_reason: str = "stop"
    chunk_delay_s: float = 0.0

    def pieces(self) -> tuple[str, ...]:
        if self.chunks is not None:
            return self.chunks
        words = self.text.split(" ")
        return tuple(w if i == len(words) - 1 else w + " " for i, w in enumerate(words)) or ("",)


@dataclass(frozen=True)
class Fault:
    """A way for a request to go wrong (build one with the static methods)."""

    kind: str
    code: int = 500
    retry_after: float | str | None = None
    message: str = "scripted failure"
    delay_s: float = 0.0
    after: int = 0
    error_type: str = "overloaded_error"
    reply: Reply = field(default_factory=lambda: Reply("the quick brown fox jumps"))

    @staticmethod
    def status(code: int, *, retry_after: float | str | None = None,
               message: str = "scripted failure") -> Fault:
        return Fault("status", code=code, retry_after=retry_after, message=message)

    @staticmethod
    def slow(delay_s: float, reply: Reply | None = None) -> Fault:
        return Fault("slow", delay_s=delay_s, reply=reply or Reply("slow answer"))

    @staticmethod
    def cut_after(chunks: int, reply: Reply | None = None) -> Fault:
        return Fault("cut", after=chunks, **({"reply": reply} if reply else {}))

    @staticmethod
    def end_early(chunks: int, reply: Reply | None = None) -> Fault:
        return Fault("end_early", after=chunks, **({"reply": reply} if reply else {}))

    @staticmethod
    def drop() -> Fault:
        return Fault("drop")

    @staticmethod
    def malformed(after: int = 0) -> Fault:
        return Fault("malformed", after=after)

    @staticmethod
    def error_event(after: int = 0, kind: str = "overloaded_error",
                    message: str = "scripted stream failure") -> Fault:
        return Fault("error_event", after=after, message=message, error_type=kind)

    @staticmethod
    def usage_missing(text: str = "no usage here") -> Reply:
        return Reply(text, usage=None)


Step = Reply | Fault


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: Any


class FakeLlmServer:
    """Base of the two fakes: the script, the recording, the HTTP plumbing."""

    route = ""

    def __init__(self, *, default: Reply | None = Reply("ok", usage=(1, 1))) -> None:
        self.default = default
        self.requests: list[RecordedRequest] = []
        self._script: deque[Step] = deque()
        self._runner: web.AppRunner | None = None
        self.root = ""

    def script(self, steps: Iterable[Step]) -> Self:
        self._script.extend(steps)
        return self

    @property
    def pending(self) -> int:
        """Scripted steps not yet consumed."""
        return len(self._script)

    @property
    def base_url(self) -> str:
        raise NotImplementedError

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_post(self.route, self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.root = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        self.requests.append(RecordedRequest(request.path, {k.lower(): v for k, v in request.headers.items()}, body))
        step: Step | None = self._script.popleft() if self._script else self.default
        streaming = isinstance(body, dict) and bool(body.get("stream"))
        model = body.get("model", "fake-model") if isinstance(body, dict) else "fake-model"
        if step is None:
            return self._error(500, "the fake server's script is exhausted", None)
        if isinstance(step, Reply):
            return await self._reply(request, step, streaming, model, body)
        if step.kind == "status":
            return self._error(step.code, step.message, step.retry_after)
        if step.kind == "slow":
            await asyncio.sleep(step.delay_s)
            return await self._reply(request, step.reply, streaming, model, body)
        if step.kind == "drop":
            _abort(request)
            return web.Response()
        if step.kind == "malformed" and not streaming:
            return web.Response(text='{"id": "x", "choices": [', content_type="application/json")
        if not streaming:  # cut (and in-band errors) on a plain request: half a body, then nothing
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.content_length = 4096
            await response.prepare(request)
            await response.write(b'{"id": "half-an-answer", ')
            _abort(request)
            return response
        return await self._faulty_stream(request, step, model, body)

    async def _reply(self, request: web.Request, reply: Reply, streaming: bool, model: str,
                     body: Any) -> web.StreamResponse:
        if not streaming:
            return web.json_response(self._answer(reply, model))
        response = await self._open_stream(request)
        async for event in self._events(reply, model, body):
            await response.write(event)
            if reply.chunk_delay_s:
                await asyncio.sleep(reply.chunk_delay_s)
        await response.write_eof()
        return response

    async def _faulty_stream(self, request: web.Request, fault: Fault, model: str,
                             body: Any) -> web.StreamResponse:
        response = await self._open_stream(request)
        sent = 0
        async for event in self._events(fault.reply, model, body):
            if self._is_text_event(event):
                if sent == fault.after:
                    break
                sent += 1
            await response.write(event)
        if fault.kind == "cut":
            _abort(request)
            return response
        if fault.kind == "end_early":
            pass
        elif fault.kind == "malformed":
            await response.write(self._malformed_event())
        else:
            await response.write(self._error_event(fault.error_type, fault.message))
        await response.write_eof()
        return response

    @staticmethod
    async def _open_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        return response

    def _error(self, status: int, message: str, retry_after: float | str | None) -> web.Response:
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        return web.json_response(self._error_body(status, message), status=status, headers=headers)

    # Provider formats (overridden).
    def _answer(self, reply: Reply, model: str) -> dict[str, Any]:
        raise NotImplementedError

    def _events(self, reply: Reply, model: str, body: Any) -> AsyncIterator[bytes]:
        raise NotImplementedError

    def _is_text_event(self, event: bytes) -> bool:
        raise NotImplementedError

    def _error_body(self, status: int, message: str) -> dict[str, Any]:
        raise NotImplementedError

    def _error_event(self, kind: str, message: str) -> bytes:
        raise NotImplementedError

    def _malformed_event(self) -> bytes:
        raise NotImplementedError


class FakeOpenAI(FakeLlmServer):
    """`POST /v1/chat/completions`; `base_url` is what an OpenAI client is given (ends in /v1)."""

    route = "/v1/chat/completions"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def _answer(self, reply: Reply, model: str) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                         "finish_reason": reply.finish_reason}],
        }
        if reply.usage is not None:
            answer["usage"] = _openai_usage(reply.usage)
        return answer

    async def _events(self, reply: Reply, model: str, body: Any) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            return _data({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                          "model": model,
                          "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        for piece in reply.pieces():
            yield chunk({"role": "assistant", "content": piece}, None)
        yield chunk({}, reply.finish_reason)
        wants_usage = isinstance(body, dict) and (body.get("stream_options") or {}).get("include_usage")
        if wants_usage and reply.usage is not None:
            yield _data({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                         "model": model, "choices": [], "usage": _openai_usage(reply.usage)})
        yield b"data: [DONE]\n\n"

    def _is_text_event(self, event: bytes) -> bool:
        return b'"content"' in event

    def _error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"error": {"message": message, "type": "fake_error", "code": str(status)}}

    def _error_event(self, kind: str, message: str) -> bytes:
        return _data({"error": {"message": message, "type": kind}})

    def _malformed_event(self) -> bytes:
        return b'data: {"id": "chatcmpl-fake", "choices": [\n\n'


class FakeAnthropic(FakeLlmServer):
    """`POST /v1/messages`; `base_url` is the server's root, as an Anthropic client expects."""

    route = "/v1/messages"

    @property
    def base_url(self) -> str:
        return self.root

    def _answer(self, reply: Reply, model: str) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": reply.text}],
            "stop_reason": _stop_reason(reply.finish_reason), "stop_sequence": None,
        }
        if reply.usage is not None:
            answer["usage"] = {"input_tokens": reply.usage[0], "output_tokens": reply.usage[1]}
        return answer

    async def _events(self, reply: Reply, model: str, body: Any) -> AsyncIterator[bytes]:
        message: dict[str, Any] = {"id": "msg_fake", "type": "message", "role": "assistant",
                                   "model": model, "content": [], "stop_reason": None,
                                   "stop_sequence": None}
        if reply.usage is not None:
            message["usage"] = {"input_tokens": reply.usage[0], "output_tokens": 1}
        yield _event("message_start", {"type": "message_start", "message": message})
        yield _event("content_block_start", {"type": "content_block_start", "index": 0,
                                             "content_block": {"type": "text", "text": ""}})
        yield _event("ping", {"type": "ping"})
        for piece in reply.pieces():
            yield _event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                 "delta": {"type": "text_delta", "text": piece}})
        yield _event("content_block_stop", {"type": "content_block_stop", "index": 0})
        delta: dict[str, Any] = {"type": "message_delta",
                                 "delta": {"stop_reason": _stop_reason(reply.finish_reason),
                                           "stop_sequence": None}}
        if reply.usage is not None:
            delta["usage"] = {"output_tokens": reply.usage[1]}
        yield _event("message_delta", delta)
        yield _event("message_stop", {"type": "message_stop"})

    def _is_text_event(self, event: bytes) -> bool:
        return event.startswith(b"event: content_block_delta")

    def _error_body(self, status: int, message: str) -> dict[str, Any]:
        kinds = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 429: "rate_limit_error", 529: "overloaded_error"}
        return {"type": "error", "error": {"type": kinds.get(status, "api_error"), "message": message}}

    def _error_event(self, kind: str, message: str) -> bytes:
        return _event("error", {"type": "error", "error": {"type": kind, "message": message}})

    def _malformed_event(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": \n\n'


def _openai_usage(usage: tuple[int, int]) -> dict[str, int]:
    return {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}


def _stop_reason(finish_reason: str) -> str:
    return {"stop": "end_turn", "length": "max_tokens"}.get(finish_reason, finish_reason)


def _data(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\n".encode() + _data(payload)


def _abort(request: web.Request) -> None:
    """Drop the connection at once (no terminating chunk, no complete body)."""
    if request.transport is not None:
        request.transport.abort()  # type: ignore[attr-defined]


@contextlib.contextmanager
def serving_in_thread(server: FakeLlmServer) -> Iterator[FakeLlmServer]:
    """`server` answering from a thread of its own (its own event loop), for callers that are
    not in this process's loop: Ray actors, a Serve deployment, a subprocess. `script()` may be
    called from the test while it runs; `requests` is read after the calls it waits for."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-llm", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
