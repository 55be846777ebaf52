"""Work an actor repeats for as long as it lives: `every(interval_s, action, doing)` runs
`action`, logs its failure (naming what it was `doing`) and never stops because of one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("ymera.periodic")


async def every(interval_s: float, action: Callable[[], Awaitable[Any]], doing: str,
                wait_first: bool = False) -> None:
    """`action` now (after `interval_s` when `wait_first`), then every `interval_s`, for good."""
    if wait_first:
        await asyncio.sleep(interval_s)
    while True:
        try:
            await action()
        except Exception as exc:
            log.warning("%s failed (%s)", doing, exc)
        await asyncio.sleep(interval_s)
