"""Retry, pure: the backoff before sending again after a 429, and the retry tiers."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sms_relay.errors import ProviderError


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


@dataclass(frozen=True)
class TierPlan:
    """The retry topics in order; past the last one an event is dead-lettered."""

    tiers: Sequence[tuple[str, float]]

    def after(self, tier_index: int) -> tuple[str, float] | None:
        """The tier following `tier_index` (-1 = the main topic), or None when exhausted."""
        following = tier_index + 1
        return self.tiers[following] if following < len(self.tiers) else None
