"""`actors.cpu_meter`: each attempt is charged its own CPU time, on the event loop and in the
default executor, and metering changes nothing else about how its coroutine behaves."""

from __future__ import annotations

import asyncio
import time

import pytest

from actors import cpu_meter
from actors.cpu_meter import CpuMeter, metered

pytestmark = pytest.mark.usefixtures("gc_paused")

BUSY_S = 0.2
TOLERANCE_S = 0.08


def burn(seconds: float) -> None:
    """Use about `seconds` of this thread's CPU time."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


async def busy_in_steps(seconds: float, steps: int = 10) -> str:
    for _ in range(steps):
        burn(seconds / steps)
        await asyncio.sleep(0)
    return "busy done"


async def sleeping(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slept"


async def test_a_busy_coroutine_is_charged_its_cpu_time() -> None:
    meter = CpuMeter()

    assert await metered(busy_in_steps(BUSY_S), meter) == "busy done"

    assert meter.cpu_s == pytest.approx(BUSY_S, abs=TOLERANCE_S)


async def test_interleaved_attempts_are_each_charged_their_own_cpu() -> None:
    busy, idle = CpuMeter(), CpuMeter()

    results = await asyncio.gather(metered(busy_in_steps(BUSY_S, steps=20), busy),
                                   metered(sleeping(BUSY_S), idle))

    assert results == ["busy done", "slept"]
    assert busy.cpu_s == pytest.approx(BUSY_S, abs=TOLERANCE_S)
    assert idle.cpu_s < 0.02


async def test_work_sent_to_threads_and_child_tasks_is_charged_to_its_attempt() -> None:
    cpu_meter.install(asyncio.get_running_loop())
    cpu_meter.install(asyncio.get_running_loop())
    offloaded, spawning, bystander = CpuMeter(), CpuMeter(), CpuMeter()

    async def offload() -> str:
        await asyncio.to_thread(burn, BUSY_S)
        return "offloaded"

    async def spawn() -> list[str]:
        return list(await asyncio.gather(busy_in_steps(BUSY_S / 2),
                                          asyncio.wait_for(busy_in_steps(BUSY_S / 2), 10)))

    results = await asyncio.gather(metered(offload(), offloaded), metered(spawn(), spawning),
                                   metered(sleeping(BUSY_S), bystander))
    await asyncio.to_thread(burn, 0.05)  # no attempt's: charged to nobody

    assert results == ["offloaded", ["busy done", "busy done"], "slept"]
    assert offloaded.cpu_s == pytest.approx(BUSY_S, abs=TOLERANCE_S)
    assert spawning.cpu_s == pytest.approx(BUSY_S, abs=TOLERANCE_S)
    assert bystander.cpu_s < 0.02


async def test_results_and_exceptions_pass_through_unchanged() -> None:
    class Refused(Exception):
        pass

    async def refuse() -> None:
        burn(0.01)
        await asyncio.sleep(0)
        raise Refused("no")

    async def recover() -> str:
        try:
            await refuse()
        except Refused:
            return "recovered"
        return "unreachable"

    meter = CpuMeter()
    with pytest.raises(Refused, match="no"):
        await metered(refuse(), meter)
    assert meter.cpu_s > 0
    assert await metered(recover(), CpuMeter()) == "recovered"


async def test_cancellation_reaches_the_coroutine_and_propagates() -> None:
    seen: list[str] = []

    async def waits_then_cleans_up() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            await asyncio.sleep(0)
            seen.append("cleaned up")
            raise

    running = asyncio.ensure_future(metered(waits_then_cleans_up(), CpuMeter()))
    await asyncio.sleep(0.01)
    running.cancel()

    with pytest.raises(asyncio.CancelledError):
        await running
    assert seen == ["cancelled", "cleaned up"]
    assert running.cancelled()


async def test_a_coroutine_may_swallow_its_cancellation_like_an_unmetered_one() -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "kept going"
        return "unreachable"

    running = asyncio.ensure_future(metered(stubborn(), CpuMeter()))
    await asyncio.sleep(0.01)
    running.cancel()

    assert await running == "kept going"


async def test_a_timeout_around_a_metered_coroutine_still_fires() -> None:
    meter = CpuMeter()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(metered(sleeping(10), meter), timeout=0.05)
    assert meter.cpu_s < 0.02
