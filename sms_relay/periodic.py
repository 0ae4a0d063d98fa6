"""Background work that runs every N seconds until its process stops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def every(
    interval: float,
    step: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    *,
    what: str,
    survives: tuple[type[BaseException], ...] = (),
) -> None:
    """Run `step` now and then every `interval` seconds until `stop` is set.

    An exception of a `survives` class is logged as `<what> failed` and the next round
    goes on (an outside system that was away may be back); any other one ends the loop
    and reaches the caller, which decides whether the process can go on without it.
    """
    while not stop.is_set():
        try:
            await step()
        except survives as error:
            log.warning("%s failed", what, extra={"error": repr(error)})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
