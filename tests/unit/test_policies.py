"""Pure policies: retry delays, retry tiers, pacing, masking, settings."""

from __future__ import annotations

import asyncio

import pytest

from sms_relay.adapters.kafka.topics import topic_names
from sms_relay.delivery.pacing import Lane, RateLimiter, Slots
from sms_relay.domain.retry import (
    RetryPolicy,
    RetryTier,
    TierPlan,
    delay_named_tiers,
    parse_duration,
    retry_topic,
)
from sms_relay.errors import (
    ConfigurationError,
    ProviderRejectedError,
    ProviderThrottledError,
    ProviderUnavailableError,
)
from sms_relay.masking import mask_phone, phone_hash, redact
from sms_relay.settings import KafkaSettings, load_settings


def test_backoff_doubles_up_to_the_cap_and_stops_after_the_last_attempt() -> None:
    policy = RetryPolicy(max_attempts=5, base_seconds=0.5, max_seconds=1.5, uniform=lambda: 1.0)
    throttled = ProviderThrottledError("429")
    assert [policy.next_delay(n, throttled) for n in range(1, 6)] == [0.5, 1.0, 1.5, 1.5, None]


def test_permanent_errors_are_never_retried_and_uncertain_ones_are() -> None:
    policy = RetryPolicy(max_attempts=3, base_seconds=1, max_seconds=8, uniform=lambda: 0.5)
    assert policy.next_delay(1, ProviderRejectedError("400", code=21211)) is None
    assert policy.next_delay(1, ProviderUnavailableError("503")) == 0.5


def test_tiers_run_in_order_then_run_out() -> None:
    plan = TierPlan([30.0, 300.0])
    assert plan.after(-1) == RetryTier(position=1, delay_seconds=30.0)
    assert plan.after(0) == RetryTier(position=2, delay_seconds=300.0)
    assert plan.after(1) is None


def test_retry_topics_are_named_by_position_whatever_their_delay() -> None:
    assert retry_topic("order-shipped", 1) == "order-shipped.retry.1"
    assert retry_topic("appointment-reminder", 3) == "appointment-reminder.retry.3"
    kafka = KafkaSettings(topic_order_shipped="order-shipped")
    assert topic_names(kafka, ("5m", "30m")) == topic_names(kafka, ("10s", "1h"))
    assert "order-shipped.retry.2" in topic_names(kafka, ("5m", "30m"))


def test_delay_named_topics_continue_in_the_tier_of_their_delay() -> None:
    topics = [
        "order-shipped",
        "order-shipped.retry.1",  # named by position: not an old one
        "order-shipped.retry.30s",  # the same delay as tier 1
        "order-shipped.retry.1m",  # no tier of 1m: the first longer one, tier 2
        "order-shipped.retry.2h",  # longer than every tier: the last
        "order-shipped.retry.soon",  # not a duration: not ours
        "other.retry.30s",  # another input topic's
        "order-shipped.dlq",
    ]
    found = delay_named_tiers("order-shipped", topics, [30.0, 300.0, 1800.0])
    assert found == {
        "order-shipped.retry.30s": 0,
        "order-shipped.retry.1m": 1,
        "order-shipped.retry.2h": 2,
    }
    assert delay_named_tiers("order-shipped", topics, []) == {}


def test_durations_are_parsed_as_before() -> None:
    assert [parse_duration(t) for t in ("500ms", "30s", "1.5m", "2h", ".5s")] == [
        0.5,
        30.0,
        90.0,
        7200.0,
        0.5,
    ]
    for bad in ("", "30", "s", "5 m", "1d", "-1s"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


async def test_rate_limiter_paces_to_the_configured_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(rate=4, clock=lambda: now[0], sleep=fake_sleep)
    for _ in range(5):
        await limiter.acquire()
    assert now[0] == pytest.approx(1.0)  # 5 sends at 4/s: the first is free
    assert slept == pytest.approx([0.25] * 4)


def test_numbers_are_masked_to_their_last_four_digits() -> None:
    assert mask_phone("+12125550123") == "+*******0123"
    assert redact("to=+12125550123&x=%2B12125550199 token=s3cret", ["s3cret"]) == (
        "to=+*******0123&x=%2B*******0199 token=[redacted]"
    )


def test_phone_hash_is_keyed() -> None:
    assert phone_hash("a", "+12125550123") != phone_hash("b", "+12125550123")


def test_bad_configuration_names_each_problem_without_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("REQUIRE_TWILIO_SIGNATURE", "false")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "hunter2-secret")
    with pytest.raises(ConfigurationError) as error:
        load_settings()
    assert "REQUIRE_TWILIO_SIGNATURE=false is refused" in str(error.value)
    assert "hunter2" not in str(error.value)


def test_bad_retry_tier_is_reported_by_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMS_RETRY_TIERS", "30s,soon")
    with pytest.raises(ConfigurationError, match="SMS_RETRY_TIERS"):
        load_settings()


async def test_late_wake_ups_do_not_lower_the_rate() -> None:
    now = [0.0]

    async def late_sleep(seconds: float) -> None:
        now[0] += seconds + 0.05  # a busy event loop wakes 50 ms late every time

    limiter = RateLimiter(rate=4, burst=2, clock=lambda: now[0], sleep=late_sleep)
    for _ in range(10):
        await limiter.acquire()
    # 10 sends at 4/s with a burst of 2: 2 s ideally; lateness is credited back, so the
    # total stays well under the 2.4 s that 8 uncredited late waits would take.
    assert now[0] < 2.2


async def test_an_overdue_send_takes_the_next_token_ahead_of_first_sends() -> None:
    """A taken-over event's resend must not queue behind a backlog of first sends."""
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds  # float sums may fall a rounding error short of a whole token
        for _ in range(5):  # a wait spans several turns of the loop, as a real one does
            await asyncio.sleep(0)

    limiter = RateLimiter(rate=10, clock=lambda: now[0], sleep=sleep)
    order: list[str] = []

    async def send(name: str, lane: Lane) -> None:
        await limiter.acquire(lane)
        order.append(name)

    first = [asyncio.create_task(send(f"first{i}", Lane.FIRST)) for i in range(4)]
    await asyncio.sleep(0)  # first0 took the free token; first1 waits for the next
    overdue = asyncio.create_task(send("overdue", Lane.OVERDUE))
    await asyncio.gather(*first, overdue)
    assert order == ["first0", "first1", "overdue", "first2", "first3"]
    assert now[0] == pytest.approx(0.4), "the rate is unchanged"


async def test_slots_go_to_the_overdue_lane_first_and_are_never_lost_to_a_cancel() -> None:
    slots = Slots(1)
    await slots.acquire()
    order: list[str] = []

    async def hold(name: str, lane: Lane) -> None:
        await slots.acquire(lane)
        order.append(name)
        slots.release()

    waiting = {
        name: asyncio.create_task(hold(name, lane))
        for name, lane in [("a", Lane.FIRST), ("b", Lane.FIRST), ("c", Lane.OVERDUE)]
    }
    gone = asyncio.create_task(hold("gone", Lane.OVERDUE))
    await asyncio.sleep(0)
    gone.cancel()  # cancelled while waiting: it must not take a slot with it
    await asyncio.sleep(0)
    slots.release()
    await asyncio.gather(*waiting.values())
    assert order == ["c", "a", "b"]
    # Handed the slot in the same turn as it was cancelled: it passes the slot on.
    await slots.acquire()
    late = asyncio.create_task(slots.acquire(Lane.FIRST))
    await asyncio.sleep(0)
    slots.release()
    late.cancel()
    with pytest.raises(asyncio.CancelledError):
        await late
    await asyncio.wait_for(slots.acquire(), timeout=1)  # the slot is free again


async def test_a_token_short_by_a_rounding_error_is_whole() -> None:
    """Sums of 0.1 s fall a rounding error short of a whole token at 10/s; the wait for
    the rest (1e-16 s) moved no clock, and the limiter slept on it forever."""
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds
        await asyncio.sleep(0)

    limiter = RateLimiter(rate=10, clock=lambda: now[0], sleep=sleep)
    for _ in range(50):
        await asyncio.wait_for(limiter.acquire(), timeout=2)
    assert now[0] == pytest.approx(4.9)
