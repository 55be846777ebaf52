"""Clients of one deployment each: the OpenAI-compatible chat completions API and Anthropic's Messages API.

Both wrap the providers' official SDKs with the SDKs' own retries off (`max_retries=0`): the gateway
owns retries, fallback and breakers, so one call here is one HTTP request. Guarantees:

- Only `LlmError`s leave a provider; SDK exceptions are translated at this boundary:

      HTTP 429                               RateLimited (retry_after_s from Retry-After(-Ms))
      HTTP 408, client timeout               ProviderTimeout
      HTTP 5xx, connection refused or cut    ProviderUnavailable
      malformed JSON / unparsable answer     ProviderUnavailable (a broken provider: retryable,
                                             another deployment may answer properly)
      other HTTP 4xx                         BadModelRequest
      in-band stream error event             by its type (rate limit, overloaded, ...)

- A stream yields text chunks, then exactly one `Completion`. A failure before the first chunk
  raises the classified error (the caller may fail over); after it, `StreamBroken`. A stream that
  ends without the provider's end marker (finish reason / `message_stop`) counts as failed: never a
  silently truncated answer.
- A missing usage report gives `usage=None`, never an error.
- `finish_reason` uses OpenAI's words: Anthropic's `end_turn`/`stop_sequence` become "stop" and
  `max_tokens` becomes "length"; anything else passes through.
- The API key is sent as a header by the SDK and appears in no error message (any echo of it in
  the provider's answer is masked) nor in this module's repr. SDK exceptions are not chained to
  ours (`from None`): their text quotes provider bodies and their requests carry the headers.
- Prompts stay out of the logs: the SDKs log each request's body at DEBUG ("Request options"),
  and a filter on their client loggers drops those records unless `set_prompt_logging(True)`.
- `complete` finishes within `timeout_s` as a whole; a stream waits at most `timeout_s` for each
  read (the first chunk included).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import anthropic
import openai

from ml.llm.config import Deployment
from ml.llm.types import (
    ROLES,
    BadModelRequest,
    Completion,
    LlmError,
    Message,
    Provider,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    StreamBroken,
    Usage,
)

_NO_KEY = "no-key"
"""Sent to OpenAI-compatible servers configured without a key (the SDK insists on one, and would
otherwise read OPENAI_API_KEY from the environment)."""
_DETAIL_CHARS = 200
_ANTHROPIC_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}
_IN_BAND_ERRORS: dict[str, type[LlmError]] = {
    "rate_limit_error": RateLimited, "rate_limit_exceeded": RateLimited,
    "timeout_error": ProviderTimeout,
    "invalid_request_error": BadModelRequest, "authentication_error": BadModelRequest,
    "permission_error": BadModelRequest, "not_found_error": BadModelRequest,
}
"""Error types a provider reports inside a 200 stream; unlisted ones are ProviderUnavailable."""

_SDK_REQUEST_LOGGERS = ("openai._base_client", "anthropic._base_client")
_SDK_REQUEST_RECORD = "Request options"


class _PromptFilter(logging.Filter):
    """Drops the SDKs' request-body debug records (they quote the prompt) unless allowed."""

    allowed = False

    def filter(self, record: logging.LogRecord) -> bool:
        return self.allowed or not str(record.msg).startswith(_SDK_REQUEST_RECORD)


_PROMPT_FILTER = _PromptFilter()
for _name in _SDK_REQUEST_LOGGERS:
    logging.getLogger(_name).addFilter(_PROMPT_FILTER)


def set_prompt_logging(enabled: bool) -> None:
    """Let the SDKs' debug logs show request bodies (prompts), process-wide; off by default."""
    _PROMPT_FILTER.allowed = enabled


def make_provider(deployment: Deployment, environ: Mapping[str, str] | None = None) -> Provider:
    """The client for `deployment`; reads its key now (`LlmConfigError` when it cannot)."""
    if deployment.provider == "anthropic":
        return AnthropicProvider(deployment, environ)
    return OpenAIProvider(deployment, environ)


class _ProviderBase:
    """What both clients share: the deployment, key masking, error translation."""

    def __init__(self, deployment: Deployment, environ: Mapping[str, str] | None) -> None:
        self.deployment = deployment
        key = deployment.api_key(environ)
        self._key = key.reveal() if key is not None else None

    def __repr__(self) -> str:
        d = self.deployment
        return f"{type(self).__name__}(deployment={d.name!r}, model={d.model!r}, base_url={d.base_url!r})"

    def _error(self, cls: type[LlmError], what: str, detail: str | None = None,
               retry_after_s: float | None = None) -> LlmError:
        message = f"deployment {self.deployment.name!r}: {what}"
        if detail:
            message += f": {self._mask(detail)[:_DETAIL_CHARS]}"
        return cls(message, self.deployment.name, retry_after_s)

    def _mask(self, text: str) -> str:
        return text.replace(self._key, "[redacted]") if self._key else text

    def _translate(self, exc: BaseException) -> LlmError:
        """The `LlmError` for an exception raised by the SDK (or its JSON parsing)."""
        if isinstance(exc, LlmError):
            return exc
        if isinstance(exc, (asyncio.TimeoutError, openai.APITimeoutError, anthropic.APITimeoutError)):
            return self._error(ProviderTimeout, f"no answer within {self.deployment.timeout_s:g}s"
                               if isinstance(exc, asyncio.TimeoutError) else "the request timed out")
        if isinstance(exc, (openai.APIConnectionError, anthropic.APIConnectionError)):
            return self._error(ProviderUnavailable, "cannot reach the provider or the connection broke",
                               type(exc.__cause__).__name__ if exc.__cause__ else None)
        if isinstance(exc, (openai.APIResponseValidationError, anthropic.APIResponseValidationError,
                            ValueError)):
            return self._error(ProviderUnavailable, "the provider's answer is malformed",
                               type(exc).__name__)
        if isinstance(exc, (openai.APIStatusError, anthropic.APIStatusError)) and exc.status_code >= 400:
            return self._status_error(exc.status_code, exc.response.headers, _provider_message(exc.body))
        if isinstance(exc, (openai.APIError, anthropic.APIError)):  # an error event inside a stream
            kind = _error_type(exc.body)
            cls = _IN_BAND_ERRORS.get(kind or "", ProviderUnavailable)
            return self._error(cls, f"the provider reported {kind or 'an error'}",
                               _provider_message(exc.body) or exc.message)
        raise exc

    def _status_error(self, status: int, headers: Mapping[str, str], detail: str | None) -> LlmError:
        retry_after = retry_after_s(headers)
        if status == 429:
            return self._error(RateLimited, "rate limited (HTTP 429)", detail, retry_after)
        if status == 408:
            return self._error(ProviderTimeout, "the provider timed out (HTTP 408)", detail)
        if status >= 500:
            return self._error(ProviderUnavailable, f"provider error (HTTP {status})", detail, retry_after)
        return self._error(BadModelRequest, f"request refused (HTTP {status})", detail)

    def _broken(self, exc: BaseException, chunks: int) -> LlmError:
        """The error for a stream that failed after `chunks` text chunks."""
        error = self._translate(exc)
        if chunks == 0:
            return error
        return StreamBroken(f"{error.message} (the stream broke after {chunks} chunks)",
                            self.deployment.name)

    async def _items(self, stream: AsyncIterator[Any], parts: list[str]) -> AsyncIterator[Any]:
        """The SDK stream's items; a failure to read one is translated by how many text chunks
        (`parts`, filled by the caller) came before it (`_broken`)."""
        iterator = stream.__aiter__()
        while True:
            try:
                item = await iterator.__anext__()
            except StopAsyncIteration:
                return
            except Exception as exc:
                raise self._broken(exc, len(parts)) from None
            yield item

    def _unfinished(self, chunks: int) -> LlmError:
        what = "the stream ended before the provider marked the answer complete"
        if chunks == 0:
            return self._error(ProviderUnavailable, what)
        return self._error(StreamBroken, f"{what} (after {chunks} chunks)")

    def _check(self, messages: Sequence[Message]) -> None:
        if not messages:
            raise self._error(BadModelRequest, "no messages to send")
        for message in messages:
            if message.role not in ROLES:
                raise self._error(BadModelRequest, f"unknown message role {message.role!r}; "
                                                   f"expected one of {', '.join(ROLES)}")


class OpenAIProvider(_ProviderBase):
    """A deployment behind the OpenAI-compatible chat completions API (OpenAI, vLLM, Ray Serve LLM,
    Ollama, most hosted models); `base_url` includes the API prefix, usually `/v1`."""

    def __init__(self, deployment: Deployment, environ: Mapping[str, str] | None = None) -> None:
        super().__init__(deployment, environ)
        self._client = openai.AsyncOpenAI(
            api_key=self._key or _NO_KEY, base_url=deployment.base_url, max_retries=0,
            timeout=deployment.timeout_s)

    async def aclose(self) -> None:
        await self._client.close()

    async def complete(self, messages: Sequence[Message], *, max_tokens: int, temperature: float,
                       timeout_s: float) -> Completion:
        self._check(messages)
        try:
            async with asyncio.timeout(timeout_s):
                response = await self._client.chat.completions.create(
                    **self._request(messages, max_tokens, temperature), timeout=timeout_s)
        except Exception as exc:
            raise self._translate(exc) from None
        if not response.choices:
            raise self._error(ProviderUnavailable, "the provider's answer has no choices")
        choice = response.choices[0]
        return Completion(text=choice.message.content or "", usage=_openai_usage(response.usage),
                          model=response.model or self.deployment.model,
                          deployment=self.deployment.name, finish_reason=choice.finish_reason)

    async def stream(self, messages: Sequence[Message], *, max_tokens: int, temperature: float,
                     timeout_s: float) -> AsyncIterator[str | Completion]:
        self._check(messages)
        try:
            chunks_in = await self._client.chat.completions.create(
                **self._request(messages, max_tokens, temperature), stream=True,
                stream_options={"include_usage": True}, timeout=timeout_s)
        except Exception as exc:
            raise self._translate(exc) from None
        parts: list[str] = []
        usage: Usage | None = None
        finish_reason: str | None = None
        model = self.deployment.model
        try:
            async for chunk in self._items(chunks_in, parts):
                model = chunk.model or model
                usage = _openai_usage(chunk.usage) or usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                finish_reason = choice.finish_reason or finish_reason
                text = choice.delta.content if choice.delta else None
                if text:
                    parts.append(text)
                    yield text
        finally:
            await chunks_in.close()
        if finish_reason is None:
            raise self._unfinished(len(parts))
        yield Completion(text="".join(parts), usage=usage, model=model,
                         deployment=self.deployment.name, finish_reason=finish_reason)

    def _request(self, messages: Sequence[Message], max_tokens: int,
                 temperature: float) -> dict[str, Any]:
        return {"model": self.deployment.model, "max_tokens": max_tokens, "temperature": temperature,
                "messages": [{"role": m.role, "content": m.content} for m in messages]}


class AnthropicProvider(_ProviderBase):
    """A deployment behind Anthropic's Messages API; system messages become the `system` prompt."""

    def __init__(self, deployment: Deployment, environ: Mapping[str, str] | None = None) -> None:
        super().__init__(deployment, environ)
        self._client = anthropic.AsyncAnthropic(
            api_key=self._key, base_url=deployment.base_url, max_retries=0,
            timeout=deployment.timeout_s, open_telemetry=False)

    async def aclose(self) -> None:
        await self._client.close()

    async def complete(self, messages: Sequence[Message], *, max_tokens: int, temperature: float,
                       timeout_s: float) -> Completion:
        self._check(messages)
        try:
            async with asyncio.timeout(timeout_s):
                response = await self._client.messages.create(
                    **self._request(messages, max_tokens, temperature), timeout=timeout_s)
        except Exception as exc:
            raise self._translate(exc) from None
        usage = getattr(response, "usage", None)
        text = "".join(block.text for block in response.content or () if block.type == "text")
        return Completion(
            text=text, model=response.model or self.deployment.model, deployment=self.deployment.name,
            usage=None if usage is None else _usage(usage.input_tokens, usage.output_tokens),
            finish_reason=_finish_reason(response.stop_reason))

    async def stream(self, messages: Sequence[Message], *, max_tokens: int, temperature: float,
                     timeout_s: float) -> AsyncIterator[str | Completion]:
        self._check(messages)
        try:
            events = await self._client.messages.create(
                **self._request(messages, max_tokens, temperature), stream=True, timeout=timeout_s)
        except Exception as exc:
            raise self._translate(exc) from None
        parts: list[str] = []
        input_tokens: int | None = None
        output_tokens: int | None = None
        stop_reason: str | None = None
        finished = False
        model = self.deployment.model
        try:
            async for event in self._items(events, parts):
                if event.type == "message_start":
                    model = event.message.model or model
                    usage = getattr(event.message, "usage", None)
                    input_tokens = usage.input_tokens if usage is not None else None
                elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                    if event.delta.text:
                        parts.append(event.delta.text)
                        yield event.delta.text
                elif event.type == "message_delta":
                    stop_reason = event.delta.stop_reason or stop_reason
                    usage_delta = getattr(event, "usage", None)
                    if usage_delta is not None and usage_delta.output_tokens is not None:
                        output_tokens = usage_delta.output_tokens
                elif event.type == "message_stop":
                    finished = True
        finally:
            await events.close()
        if not finished:
            raise self._unfinished(len(parts))
        usage_total = _usage(input_tokens, output_tokens)
        yield Completion(text="".join(parts), usage=usage_total, model=model,
                         deployment=self.deployment.name, finish_reason=_finish_reason(stop_reason))

    def _request(self, messages: Sequence[Message], max_tokens: int,
                 temperature: float) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        request: dict[str, Any] = {
            "model": self.deployment.model, "max_tokens": max_tokens,
            "messages": [{"role": m.role, "content": m.content} for m in messages if m.role != "system"],
            # This SDK's `create` has no `temperature` parameter; the API still takes it in the body.
            "extra_body": {"temperature": temperature},
        }
        if system:
            request["system"] = system
        return request


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait, from `retry-after-ms` or `retry-after` (seconds or an HTTP date); None if
    absent or unreadable."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _usage(input_tokens: int | None, output_tokens: int | None) -> Usage | None:
    if input_tokens is None or output_tokens is None:
        return None
    return Usage(input_tokens=input_tokens, output_tokens=output_tokens)


def _openai_usage(usage: Any) -> Usage | None:
    if usage is None:
        return None
    return _usage(getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None))


def _finish_reason(stop_reason: str | None) -> str | None:
    return None if stop_reason is None else _ANTHROPIC_STOP_REASONS.get(stop_reason, stop_reason)


def _provider_message(body: object) -> str | None:
    """The provider's own error message in an error body (OpenAI's or Anthropic's shape)."""
    if isinstance(body, Mapping):
        inner = body.get("error")
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return body if isinstance(body, str) and body else None


def _error_type(body: object) -> str | None:
    if isinstance(body, Mapping):
        inner = body.get("error")
        if isinstance(inner, Mapping) and isinstance(inner.get("type"), str):
            return str(inner["type"])
        if isinstance(body.get("type"), str) and body["type"] != "error":
            return str(body["type"])
    return None
