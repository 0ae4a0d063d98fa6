"""`python -m bench.pacing [SENDS]`: what the lanes cost a send's pacing.

The consumer's pacing (`Slots` for requests in flight, then `RateLimiter` for the rate,
both with lanes) against the plain asyncio pair it replaced (a Semaphore and a
Lock-guarded token bucket), in one process, alternating, three rounds each: SENDS sends
through 128 slots at 50,000/s with no request time, so what is measured is the pacing's
own CPU per send; a fifth of the sends are in the overdue lane.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

from sms_relay.delivery.pacing import Lane, RateLimiter, Slots

CONCURRENCY = 128
RATE = 50_000.0


class PlainRateLimiter:
    """The token bucket as it was before the lanes: waiters in turn on an asyncio.Lock."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._tokens = 1.0
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(1.0, self._tokens + (now - self._updated) * self._rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self._rate)


async def plain(sends: int) -> None:
    slots, limiter = asyncio.Semaphore(CONCURRENCY), PlainRateLimiter(RATE)

    async def send() -> None:
        async with slots:
            await limiter.acquire()
            await asyncio.sleep(0)

    await asyncio.gather(*(send() for _ in range(sends)))


async def laned(sends: int) -> None:
    slots, limiter = Slots(CONCURRENCY), RateLimiter(RATE)

    async def send(lane: Lane) -> None:
        async with slots.held(lane):
            await limiter.acquire(lane)
            await asyncio.sleep(0)

    await asyncio.gather(*(send(Lane.OVERDUE if i % 5 == 0 else Lane.FIRST) for i in range(sends)))


def main() -> None:
    sends = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    cpu: dict[str, list[float]] = {"plain": [], "lanes": []}
    for _ in range(3):
        for name, run in (("plain", plain), ("lanes", laned)):
            started = time.process_time()
            asyncio.run(run(sends))
            cpu[name].append((time.process_time() - started) / sends * 1e6)
    base, new = statistics.median(cpu["plain"]), statistics.median(cpu["lanes"])
    print(f"pacing CPU per send, median of 3 ({sends} sends, {CONCURRENCY} slots, {RATE:.0f}/s):")
    print(f"  plain Semaphore + Lock  {base:6.1f} us")
    print(f"  Slots + lanes           {new:6.1f} us   ({new / base:.2f}x plain)")


if __name__ == "__main__":
    main()
