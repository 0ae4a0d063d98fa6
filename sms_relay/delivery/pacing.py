"""Pacing: a token bucket and a bound on requests in flight, shared by every send of a
process. Both let waiters in by lane first, then in arrival order: a send of an event
that was tried before (held back, taken over from a dead consumer, back from a retry
tier) has waited already, and must not queue behind a backlog of first sends."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from enum import IntEnum


class Lane(IntEnum):
    OVERDUE = 0  # tried before: it goes first
    FIRST = 1


class Slots:
    """At most `limit` holders at once; waiters are let in by lane, then in turn."""

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrival = itertools.count()

    async def acquire(self, lane: Lane = Lane.FIRST) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (lane, next(self._arrival), turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # handed a slot just as we were cancelled: pass it on
            raise

    @contextlib.asynccontextmanager
    async def held(self, lane: Lane = Lane.FIRST) -> AsyncIterator[None]:
        await self.acquire(lane)
        try:
            yield
        finally:
            self.release()

    def release(self) -> None:
        while self._waiting:  # a freed slot goes straight to the next waiter
            _, _, turn = heapq.heappop(self._waiting)
            if not turn.done():  # else it was cancelled while waiting
                turn.set_result(None)
                return
        self._free += 1


class RateLimiter:
    """At most `rate` acquisitions per second, `burst` at once; waiters go by lane, then
    in turn."""

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._rate = rate
        self._burst = max(1.0, burst)
        self._tokens = self._burst
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._turn = Slots(1)

    async def acquire(self, lane: Lane = Lane.FIRST) -> None:
        async with self._turn.held(lane):
            while True:
                # Time slept past the due moment (a busy loop wakes late) is credited
                # as tokens, so late wake-ups do not lower the rate.
                now = self._clock()
                self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
                self._updated = now
                # A token short only by a rounding error is whole: sleeping for 1e-17 s
                # would not move a clock, and this loop would never end.
                if self._tokens >= 1 - 1e-9:
                    self._tokens = max(0.0, self._tokens - 1)
                    return
                await self._sleep((1 - self._tokens) / self._rate)
