"""Leases that live exactly as long as their work: one heartbeat renews every claim this
process holds, and every Twilio call first checks that its lease will outlive it.

The lease's end is tracked on the local monotonic clock from the moment each claim or
renewal was *sent*: the ledger starts the lease later than that, so the local view is
never longer than the ledger's, whatever the two clocks say.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from sms_relay.clock import Clock
from sms_relay.delivery.delivery_ports import Ledger
from sms_relay.domain.lease_rules import HEARTBEATS_PER_LEASE, LEASE_MARGIN_SECONDS
from sms_relay.errors import DatabaseUnavailableError, LeaseTooShortError
from sms_relay.metrics import ConsumerMetrics
from sms_relay.periodic import every

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, ledger: Ledger, clock: Clock, metrics: ConsumerMetrics) -> None:
        self._ledger = ledger
        self._clock = clock
        self._metrics = metrics
        self._lease = ledger.lease_seconds
        self._held: dict[str, tuple[int, float]] = {}  # event id -> (token, local end)
        self._renewing: asyncio.Task[None] | None = None

    @property
    def interval(self) -> float:
        return self._lease / HEARTBEATS_PER_LEASE

    def hold(self, tokens: Mapping[str, int], claimed_at: float) -> None:
        """Start tracking claims whose request was sent at monotonic `claimed_at`."""
        for event_id, token in tokens.items():
            self._held[event_id] = (token, claimed_at + self._lease)

    def release(self, event_id: str) -> None:
        self._held.pop(event_id, None)

    def remaining(self, event_id: str) -> float:
        held = self._held.get(event_id)
        return held[1] - self._clock.monotonic() if held else 0.0

    async def ensure(self, event_id: str, needed_seconds: float) -> None:
        """Return when the lease has `needed_seconds` plus the margin left, renewing once
        if it must. Raises LeaseTooShortError otherwise: the caller must stop."""
        needed = needed_seconds + LEASE_MARGIN_SECONDS
        if self.remaining(event_id) >= needed:
            return
        if self.remaining(event_id) > 0:  # a lease that ran out is never revived
            await self.renew()
        if self.remaining(event_id) < needed:
            self._metrics.lease_handoffs.inc()
            raise LeaseTooShortError(f"lease has {self.remaining(event_id):.1f}s left")

    async def renew(self) -> None:
        """Renew every lease held, in one round trip; callers at the same time share it."""
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.ensure_future(self._renew_all())
        await asyncio.shield(self._renewing)

    async def heartbeat(self, stop: asyncio.Event) -> None:
        """Renew every `interval` until `stop` is set."""
        await every(self.interval, self.renew, stop, what="lease renewal")

    async def _renew_all(self) -> None:
        sent_at = self._clock.monotonic()
        # A lease that ran out (this process was paused past it) is not renewed, even if
        # no one has taken it yet: its events are handed on, never resumed by us.
        held = {e: h for e, h in self._held.items() if h[1] > sent_at}
        if not held:
            return
        try:
            renewed = await self._ledger.renew({e: token for e, (token, _) in held.items()})
        except DatabaseUnavailableError as error:
            # The leases run out on their own; calls stop before they would outlive them.
            self._metrics.lease_renewals.labels("error").inc()
            log.warning("lease renewal failed", extra={"error": type(error).__name__})
            return
        for event_id, (token, _) in held.items():
            current = self._held.get(event_id)
            if current is None or current[0] != token:
                continue  # released or claimed anew meanwhile
            if event_id in renewed:
                self._held[event_id] = (token, sent_at + self._lease)
            else:
                self._held[event_id] = (token, float("-inf"))  # taken over: fenced
        self._metrics.lease_renewals.labels("renewed").inc(len(renewed))
        self._metrics.lease_renewals.labels("lost").inc(len(held) - len(renewed))
