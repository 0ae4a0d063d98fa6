"""A virtual-time asyncio event loop: time moves only when every task waits.

The selector never blocks: when nothing is ready it advances the clock to the next
timer at once. So a simulated hour costs only the callbacks it runs, and a run is a
pure function of its seed (tasks run in the order they were scheduled). Each turn of the
loop also costs a microsecond, as on a real machine: code that waits "until the clock
has moved" (a token bucket topping up) always gets there.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

TURN_SECONDS = 1e-6


class DeadlockError(RuntimeError):
    """Every task waits on something that no timer will ever bring."""


class _InstantSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if ready:
            return ready
        assert self.loop is not None
        if timeout is None:
            if self.loop.wait_for_others:  # work may come from another thread
                return super().select(None)
            raise DeadlockError("no task can make progress")
        self.loop.advance(max(timeout, TURN_SECONDS))
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """`wait_for_others`: with nothing to do, wait for a call from another thread (a test
    driving the simulation's fakes) instead of declaring a deadlock."""

    def __init__(self, wait_for_others: bool = False) -> None:
        self.wait_for_others = wait_for_others
        self._virtual_time = 0.0
        selector = _InstantSelector()
        super().__init__(selector)
        selector.loop = self

    def time(self) -> float:
        return self._virtual_time

    def advance(self, seconds: float) -> None:
        self._virtual_time += max(seconds, 0.0)
