"""The CPU time of one attempt, even when many attempts interleave on one event loop.

An attempt's coroutine is run through `metered`, which adds the event-loop thread's CPU time of
each of its steps to the attempt's `CpuMeter`. Work it hands on is counted too, once
`install(loop)` has run on the replica's loop: asyncio tasks it creates (`create_task`, `gather`,
`wait_for`) are metered the same way, and calls on the loop's default executor
(`asyncio.to_thread`, `run_in_executor(None, ...)`) add their worker thread's CPU time.

Not counted: threads and processes the agent starts itself, executors of its own, native thread
pools inside libraries, and work it asks of other Ray actors or tasks.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
import types
import weakref
from collections.abc import Callable, Coroutine, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_current: contextvars.ContextVar[CpuMeter | None] = contextvars.ContextVar(
    "ymera_cpu_meter", default=None)
_installed: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


class CpuMeter:
    """CPU seconds used by one attempt so far; safe to add to from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cpu_s = 0.0

    @property
    def cpu_s(self) -> float:
        return self._cpu_s

    def add(self, seconds: float) -> None:
        with self._lock:
            self._cpu_s += max(0.0, seconds)


async def metered(coro: Coroutine[Any, Any, T], meter: CpuMeter) -> T:
    """Await `coro`, adding the CPU time of each of its steps to `meter`. Results, exceptions
    and cancellation pass through exactly as if `coro` were awaited directly."""
    return await _stepped(coro, meter)


@types.coroutine
def _stepped(coro: Coroutine[Any, Any, T], meter: CpuMeter) -> Generator[Any, Any, T]:
    sent: Any = None
    thrown: BaseException | None = None
    while True:
        token = _current.set(meter)
        started = time.thread_time()
        try:
            yielded = coro.send(sent) if thrown is None else coro.throw(thrown)
        except StopIteration as stop:
            return stop.value
        finally:
            meter.add(time.thread_time() - started)
            _current.reset(token)
        sent, thrown = None, None
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            thrown = exc


class MeteredExecutor(ThreadPoolExecutor):
    """A thread pool that adds each call's worker-thread CPU time to the meter of the context
    that submitted it (if any)."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        meter = _current.get()
        if meter is None:
            return super().submit(fn, *args, **kwargs)
        return super().submit(_timed, meter, fn, args, kwargs)


def _timed(meter: CpuMeter, fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
    started = time.thread_time()
    try:
        return fn(*args, **kwargs)
    finally:
        meter.add(time.thread_time() - started)


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Meter `loop`'s default executor and the tasks metered attempts create. Idempotent."""
    if loop in _installed:
        return
    loop.set_default_executor(MeteredExecutor(thread_name_prefix="asyncio"))
    outer = loop.get_task_factory()

    def create_task(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future:
        meter = _current.get()
        if meter is not None and asyncio.iscoroutine(coro):
            coro = metered(coro, meter)
        if outer is not None:
            return outer(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(create_task)
    _installed.add(loop)
