"""Retry, pure: the backoff after a 429, the retry tiers and their topics' names."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from sms_relay.errors import ProviderError

DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# `<input>.retry.30s`: how retry topics were named before tiers were named by position.
_DELAY_NAMED = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)(?P<unit>ms|s|m|h)")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_seconds: float
    max_seconds: float
    # Injected so tests decide the jitter; full jitter spreads a thundering herd.
    uniform: Callable[[], float] = field(default=random.random, compare=False)

    def next_delay(self, attempt: int, error: ProviderError) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to stop trying here."""
        if not error.retriable or attempt >= self.max_attempts:
            return None
        return float(self.uniform()) * min(
            self.max_seconds, self.base_seconds * 2.0 ** (attempt - 1)
        )


class RetryTier(NamedTuple):
    position: int  # 1 for the first tier: its topic is `retry_topic(input, position)`
    delay_seconds: float


@dataclass(frozen=True)
class TierPlan:
    """The retry tiers' delays in order; past the last one an event is dead-lettered."""

    delays: Sequence[float]

    def after(self, tier_index: int) -> RetryTier | None:
        """The tier following `tier_index` (-1 = the main topic), or None when exhausted."""
        following = tier_index + 1
        if following >= len(self.delays):
            return None
        return RetryTier(following + 1, self.delays[following])


def retry_topic(input_topic: str, position: int) -> str:
    """The topic of retry tier `position` (1, 2, ...) of `input_topic`.

    Named by position, not by delay: a changed delay keeps its topic, and the records
    waiting there keep the due time they carry (the `not-before` header).
    """
    return f"{input_topic}.retry.{position}"


def parse_duration(text: str) -> float:
    """Seconds in `30s`, `5m`, `1h` or `500ms`. Raises ValueError for anything else."""
    match = _DELAY_NAMED.fullmatch(text)
    if match is None:
        raise ValueError(f"retry tier {text!r} is not a duration like 30s, 5m or 1h")
    return float(match["number"]) * DURATION_UNITS[match["unit"]]


def delay_named_tiers(
    input_topic: str, topics: Iterable[str], delays: Sequence[float]
) -> dict[str, int]:
    """The retry topics among `topics` named after a delay (`<input>.retry.30s`, as before
    tiers were named by position), each with the tier index its records continue in: the
    tier of the same delay, else the first longer one, else the last."""
    prefix = f"{input_topic}.retry."
    found: dict[str, int] = {}
    for topic in topics:
        if not topic.startswith(prefix) or not delays:
            continue
        try:
            delay = parse_duration(topic.removeprefix(prefix))
        except ValueError:
            continue  # a position-named tier, or not ours
        same = [i for i, tier_delay in enumerate(delays) if tier_delay == delay]
        longer = [i for i, tier_delay in enumerate(delays) if tier_delay > delay]
        found[topic] = (same or longer or [len(delays) - 1])[0]
    return found
