"""In doubt: find the message an uncertain send may have created, before any resend.

Twilio documents only a 429 as "not processed"; after a 5xx, a timeout or a dropped
connection the message may exist, and the Messages API takes no idempotency key. So:

1. wait a settling window, counted from the end of the uncertain attempt (Twilio may
   still be creating the message while our client has given up);
2. list the recipient's messages from our sender, newest first, page by page, back to
   the first send of the event (never filtered by DateSent, which hides queued messages);
3. match the hashes of the bodies actually sent, and leave out SIDs the ledger already
   records for another event (two events, one number, one body);
4. found: that is the message. Not found: "not yet" until the horizon has passed since
   the uncertain attempt; after it, Twilio's list is trusted to be complete.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sms_relay.clock import Clock
from sms_relay.delivery.delivery_ports import ListedMessage, MessageLister, SidOwners
from sms_relay.domain.outcomes import Verdict
from sms_relay.errors import ProviderError, ProviderUnavailableError
from sms_relay.masking import mask_phone
from sms_relay.metrics import ConsumerMetrics

log = logging.getLogger(__name__)

# Twilio's clock and ours may disagree by this much.
CLOCK_SKEW = timedelta(seconds=5)
# A recipient with more messages than this since the first send is listed no further:
# the doubt stays (and is retried) rather than a resend being risked on a partial list.
MAX_PAGES = 10


class InDoubtResend(StrEnum):
    """What to do when Twilio lists no match after the reconciliation horizon."""

    AFTER_HORIZON = "after_horizon"  # send again (counted): Twilio's list is trusted
    NEVER = "never"  # dead-letter it (counted, alerted); an operator decides


@dataclass(frozen=True)
class Doubt:
    event_id: str
    to: str
    body_hashes: tuple[str, ...]
    window_start: datetime  # the first send of the event
    since: datetime  # the end of the last uncertain attempt


@dataclass(frozen=True)
class Reconciled:
    verdict: Verdict
    sid: str | None = None


class Reconciler:
    def __init__(
        self,
        lister: MessageLister,
        owners: SidOwners,
        metrics: ConsumerMetrics,
        clock: Clock,
        *,
        settle_seconds: float,
        horizon_seconds: float,
    ) -> None:
        self._lister = lister
        self._owners = owners
        self._metrics = metrics
        self._clock = clock
        self._settle = timedelta(seconds=settle_seconds)
        self._horizon = timedelta(seconds=horizon_seconds)

    async def reconcile(
        self, doubt: Doubt, before_call: Callable[[], Awaitable[None]]
    ) -> Reconciled:
        """`before_call` runs before each Twilio call (the lease check; it may raise).
        Raises ProviderError when Twilio cannot be asked: the doubt stays."""
        wait = (doubt.since + self._settle - self._clock.now()).total_seconds()
        if wait > 0:
            await self._clock.sleep(wait)
        listed_at = self._clock.now()
        try:
            candidates = await self._candidates(doubt, before_call)
            taken = await self._owners.owned_sids([m.sid for m in candidates], doubt.event_id)
        except ProviderError:
            self._metrics.in_doubt.labels("error").inc()
            raise
        found = [m for m in candidates if m.sid not in taken]
        if not found:
            past = listed_at - doubt.since >= self._horizon
            self._metrics.in_doubt.labels("not_found" if past else "not_yet").inc()
            return Reconciled(Verdict.ABSENT if past else Verdict.NOT_YET)
        if len(found) > 1:
            self._metrics.in_doubt.labels("ambiguous").inc()
            log.error(
                "several Twilio messages match one event; keeping the earliest",
                extra={
                    "eventId": doubt.event_id,
                    "to": mask_phone(doubt.to),
                    "matches": len(found),
                },
            )
        else:
            self._metrics.in_doubt.labels("found").inc()
        earliest = min(found, key=lambda m: (m.created_at or doubt.window_start, m.sid))
        return Reconciled(Verdict.FOUND, earliest.sid)

    async def _candidates(
        self, doubt: Doubt, before_call: Callable[[], Awaitable[None]]
    ) -> list[ListedMessage]:
        """Messages created since the window with a body we sent, newest first.

        Stops at a message *sent* before the window: whether Twilio orders by creation or
        by DateSent (queued ones first), nothing after it can be ours.
        """
        oldest = doubt.window_start - CLOCK_SKEW
        matches: list[ListedMessage] = []
        page: str | None = None
        for _ in range(MAX_PAGES):
            await before_call()
            async with self._metrics.twilio_call("list", ok_status="200"):
                listed = await self._lister.list_page(doubt.to, page)
            for message in listed.messages:
                if message.sent_at is not None and message.sent_at < oldest:
                    return matches
                created = message.created_at
                if message.body_hash in doubt.body_hashes and (
                    created is None or created >= oldest
                ):
                    matches.append(message)
            if listed.next_page is None:
                return matches
            page = listed.next_page
        raise ProviderUnavailableError(f"more than {MAX_PAGES} pages of messages to search")
