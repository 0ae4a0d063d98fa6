"""Pure rules of the callbacks service: the sliding window and the status ranks."""

from __future__ import annotations

import pytest

from sms_relay.projection import rank
from sms_relay.verify import SlidingWindowLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_window_allows_the_limit_then_says_when_the_oldest_hit_expires() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(limit=3, window=60, clock=clock)
    for step in range(3):
        assert limiter.retry_after("k") is None
        limiter.hit("k")
        clock.now += 10 * (step + 1)  # hits at 1000, 1010, 1030
    assert clock.now == 1060
    assert limiter.retry_after("k") is None  # the hit at 1000 left the window
    limiter.hit("k")
    assert limiter.retry_after("k") == pytest.approx(10)  # the hit at 1010 leaves at 1070
    assert limiter.retry_after("other") is None


def test_the_window_forgets_the_least_recent_keys_past_its_bound() -> None:
    limiter = SlidingWindowLimiter(limit=1, window=60, clock=FakeClock(), max_keys=2)
    for key in ("a", "b", "c"):
        limiter.hit(key)
    assert limiter.retry_after("a") is None
    assert limiter.retry_after("c") is not None


def test_ranks_never_let_a_late_step_overwrite_a_final_one() -> None:
    assert rank("accepted") < rank("queued") < rank("sent") < rank("delivered") < rank("read")
    assert rank("delivered") == rank("undelivered") == rank("failed") == rank("canceled")
    # Our ledger's own states and Twilio's `sending` are never written by the projection.
    for state in ("claimed", "sending", "retry_scheduled", "suppressed", "dead_lettered"):
        assert rank(state) == -1
