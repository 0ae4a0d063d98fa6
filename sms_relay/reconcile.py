"""In doubt: find the message an uncertain send may have created, before any resend.

Twilio documents only a 429 as "not processed"; after a 5xx, a timeout or a dropped
connection the message may exist, and the Messages API takes no idempotency key. So wait
a settling window, list the recipient's messages from our sender, and match creation
time and a hash of the body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

from sms_relay.adapters.twilio import FoundMessage
from sms_relay.errors import ProviderError
from sms_relay.masking import mask_phone
from sms_relay.metrics import ConsumerMetrics

log = logging.getLogger(__name__)


class MessageFinder(Protocol):
    async def find_sent(self, to: str, body: str, since: datetime) -> list[FoundMessage]: ...


class Reconciler:
    def __init__(
        self,
        finder: MessageFinder,
        metrics: ConsumerMetrics,
        settle_seconds: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._finder = finder
        self._metrics = metrics
        self._settle_seconds = settle_seconds
        self._sleep = sleep

    async def find(self, to: str, body: str, since: datetime) -> FoundMessage | None:
        """The message sent to `to` with `body` since `since`, if any (the earliest of
        several, which is counted and logged as ambiguous). Raises ProviderError."""
        waited = (datetime.now(UTC) - since).total_seconds()
        if waited < self._settle_seconds:
            await self._sleep(self._settle_seconds - waited)
        try:
            async with self._metrics.twilio_call("list", ok_status="200"):
                found = await self._finder.find_sent(to, body, since)
        except ProviderError:
            self._metrics.in_doubt.labels("error").inc()
            raise
        if not found:
            self._metrics.in_doubt.labels("not_found").inc()
            return None
        if len(found) > 1:
            self._metrics.in_doubt.labels("ambiguous").inc()
            log.error(
                "several Twilio messages match one event; keeping the earliest",
                extra={"to": mask_phone(to), "matches": len(found)},
            )
            found.sort(key=lambda m: m.created_at or since)
        else:
            self._metrics.in_doubt.labels("found").inc()
        return found[0]
