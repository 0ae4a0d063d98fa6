"""One Twilio contract, two Twilios: TwilioSmsSender through the twilio SDK over HTTP
against our simulator (the product's adapter), and the deterministic simulation's
adversarial Twilio (in both list orders it plays).

What the delivery core relies on through its SmsSender/MessageLister ports, as Twilio
documents it (the Message resource, Outbound Message Status, error 20429):
- a create answers the message's SID and its initial status, `queued` when sent from a
  number (`accepted` through a Messaging Service); `date_sent` stays empty until the
  message leaves the sender's queue;
- a list filtered by `To` is sorted by DateSent, most recent first, paged by
  `next_page_uri`; where a message without a DateSent sorts is not documented, so only
  its presence is part of the contract; a list may lag behind a create (public issue
  reports: twilio/twilio-java#442, twilio/twilio-node#647), so tests wait for it;
- a 429 (20429) "is never processed and is always safe to retry": nothing is created;
- a 5xx or a timeout says nothing about the create: the list has to tell.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import pytest

from sms_relay.adapters.twilio.sms_sender import LIST_PAGE_SIZE, TwilioSmsSender
from sms_relay.adapters.twilio.twilio_client import close_client, create_client
from sms_relay.clock import LoopClock
from sms_relay.delivery.delivery_ports import ListedMessage, ListedPage, SentMessage, SmsSender
from sms_relay.errors import ProviderThrottledError, ProviderUnavailableError
from sms_relay.masking import body_hash
from sms_relay.settings import TwilioSettings
from sms_relay.simulator.config import DEFAULT_FROM_NUMBER, SimulatorConfig
from sms_relay.simulator.server import SimulatorServer
from tests.dst.harness import EPOCH, AdversarialTwilio, Faults
from tests.dst.vloop import VirtualTimeLoop
from tests.support import eventually

T = TypeVar("T")
TO = "+12125550141"
OTHER = "+12125550142"
BODY = "Your order 1001 has shipped."
SID = re.compile(r"\ASM[0-9a-f]{32}\Z")
# Faults of a create: before it (nothing is created) or after it.
NOT_CREATED = ("500", "timeout")
CREATED = ("500_after_create", "timeout_after_create")


class TwilioUnderTest(Protocol):
    sender: SmsSender
    per_page: int  # messages on a full list page

    async def fail_next_create(self, to: str, fault: str) -> None:
        """The next create to `to` meets `fault`: 429, or one of NOT_CREATED or CREATED."""

    async def hold_in_queue(self) -> None:
        """Messages created from now on stay in the sender's queue (no date_sent)."""


# ------------------------------------------------------------------ the simulator


@dataclass
class SimulatedTwilio:
    sender: SmsSender
    per_page: int
    simulator: SimulatorServer

    async def fail_next_create(self, to: str, fault: str) -> None:
        await self.simulator.aclient.script(to, [fault])

    async def hold_in_queue(self) -> None:
        await self.simulator.aclient.configure(queue_hold_ms=600_000)


# ------------------------------------------------------- the simulation's fake

# The fake's names for the faults, where they differ.
DST_FATES = {"timeout": "hang", "timeout_after_create": "hang_after_create"}


class DrivenFake:
    """The simulation's AdversarialTwilio on its own virtual-time loop, in a thread, so a
    plain asyncio test drives it: its network delays and deadlines cost no real time."""

    def __init__(self, list_by_date_sent: bool) -> None:
        self._loop = VirtualTimeLoop(wait_for_others=True)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        faults = Faults(0.0, 0.0, 0.0, (-1.0, -1.0), (-1.0, -1.0), 0.0, list_by_date_sent)
        self.fake = AdversarialTwilio(random.Random(1), LoopClock(EPOCH), faults)
        self.fake.faulty = False  # no drawn faults and no list lag: only scripted ones
        self.held = False

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(work, self._loop)
        return await asyncio.wrap_future(future)

    async def _send(self, to: str, body: str, status_callback: str | None) -> SentMessage:
        sent = await self.fake.create(to, body, status_callback)
        if self.held:
            for message in self.fake.messages:
                if message.sid == sent.sid:
                    message.sent_at = math.inf  # never leaves the queue
        return sent

    async def send(
        self, to: str, body: str, status_callback: str | None, validity_seconds: int | None = None
    ) -> SentMessage:
        return await self.run(self._send(to, body, status_callback))

    async def list_page(self, to: str, page: str | None) -> ListedPage:
        return await self.run(self.fake.list_page(to, page))

    async def _script(self, to: str, fate: str) -> None:
        self.fake.scripts.setdefault(to, []).append(fate)

    def close(self) -> None:
        async def stop() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            asyncio.get_running_loop().stop()

        asyncio.run_coroutine_threadsafe(stop(), self._loop)
        self._thread.join(timeout=10)
        self._loop.close()


@dataclass
class FakeTwilio:
    sender: SmsSender
    per_page: int
    driven: DrivenFake

    async def fail_next_create(self, to: str, fault: str) -> None:
        await self.driven.run(self.driven._script(to, DST_FATES.get(fault, fault)))

    async def hold_in_queue(self) -> None:
        self.driven.held = True


@pytest.fixture(params=["simulator", "dst-by-creation", "dst-by-date-sent"])
async def twilio(request: pytest.FixtureRequest) -> AsyncIterator[TwilioUnderTest]:
    if request.param.startswith("dst"):
        driven = DrivenFake(list_by_date_sent=request.param == "dst-by-date-sent")
        try:
            yield FakeTwilio(driven, 2, driven)
        finally:
            driven.close()
        return
    config = SimulatorConfig("AC" + uuid.uuid4().hex, uuid.uuid4().hex, callback_delay_ms=20)
    async with SimulatorServer(config) as simulator:
        settings = TwilioSettings(
            account_sid=config.account_sid,
            auth_token=config.auth_token,
            from_number=DEFAULT_FROM_NUMBER,
            api_base_url=simulator.base_url,
            request_timeout_seconds=1.0,
        )
        client = create_client(settings)
        try:
            yield SimulatedTwilio(TwilioSmsSender(client, settings), LIST_PAGE_SIZE, simulator)
        finally:
            await close_client(client)


# ------------------------------------------------------------------ helpers


async def every_listed(twilio: TwilioUnderTest, to: str) -> list[ListedMessage]:
    """All pages of the list for `to`, in order."""
    messages: list[ListedMessage] = []
    page: str | None = None
    while True:
        listed = await twilio.sender.list_page(to, page)
        messages.extend(listed.messages)
        if listed.next_page is None:
            return messages
        page = listed.next_page


async def listed_once_all_of(
    twilio: TwilioUnderTest, to: str, sids: set[str]
) -> list[ListedMessage]:
    """The list for `to` once it holds every one of `sids` (a list may lag a create)."""

    async def complete() -> list[ListedMessage] | None:
        messages = await every_listed(twilio, to)
        return messages if sids <= {m.sid for m in messages} else None

    listed: list[ListedMessage] = await eventually(
        complete, timeout=15, what=f"{len(sids)} messages listed"
    )
    return listed


async def listed_once_sent(twilio: TwilioUnderTest, to: str, sids: set[str]) -> list[ListedMessage]:
    """The list for `to` once every one of `sids` is listed with a date_sent."""

    async def all_sent() -> list[ListedMessage] | None:
        messages = await every_listed(twilio, to)
        sent = {m.sid for m in messages if m.sent_at is not None}
        return messages if sids <= sent else None

    listed: list[ListedMessage] = await eventually(all_sent, timeout=15, what="messages sent")
    return listed


# ------------------------------------------------------------------ the contract


async def test_a_create_answers_a_sid_and_the_initial_status(twilio: TwilioUnderTest) -> None:
    sent = await twilio.sender.send(TO, BODY, None)
    assert SID.match(sent.sid), sent.sid
    assert sent.status == "queued"  # from a number; a Messaging Service answers `accepted`


async def test_a_created_message_is_listed_for_its_recipient_with_its_body_hash(
    twilio: TwilioUnderTest,
) -> None:
    sent = await twilio.sender.send(TO, BODY, None)
    elsewhere = await twilio.sender.send(OTHER, BODY, None)
    listed = await listed_once_all_of(twilio, TO, {sent.sid})
    (mine,) = [m for m in listed if m.sid == sent.sid]
    assert mine.body_hash == body_hash(BODY)
    assert mine.created_at is not None
    assert elsewhere.sid not in {m.sid for m in listed}


async def test_a_message_still_queued_is_listed_without_a_date_sent(
    twilio: TwilioUnderTest,
) -> None:
    await twilio.hold_in_queue()
    sent = await twilio.sender.send(TO, BODY, None)
    listed = await listed_once_all_of(twilio, TO, {sent.sid})
    (queued,) = [m for m in listed if m.sid == sent.sid]
    assert queued.sent_at is None
    assert queued.created_at is not None
    assert queued.body_hash == body_hash(BODY)


async def test_the_list_is_newest_first(twilio: TwilioUnderTest) -> None:
    sids = [(await twilio.sender.send(TO, f"{BODY} ({n})", None)).sid for n in range(3)]
    listed = await listed_once_sent(twilio, TO, set(sids))
    assert [m.sid for m in listed] == sids[::-1]
    sent_at = [m.sent_at for m in listed if m.sent_at is not None]
    assert sent_at == sorted(sent_at, reverse=True)


async def test_paging_reaches_older_messages(twilio: TwilioUnderTest) -> None:
    sids = [(await twilio.sender.send(TO, BODY, None)).sid for _ in range(twilio.per_page + 1)]
    await listed_once_sent(twilio, TO, set(sids))
    first = await twilio.sender.list_page(TO, None)
    assert len(first.messages) == twilio.per_page
    assert first.next_page is not None
    assert sids[0] not in {m.sid for m in first.messages}  # the oldest is on a later page
    later = await twilio.sender.list_page(TO, first.next_page)
    assert [m.sid for m in later.messages] == [sids[0]]
    assert later.next_page is None


async def test_a_429_raises_throttled_and_creates_nothing(twilio: TwilioUnderTest) -> None:
    await twilio.fail_next_create(TO, "429")
    with pytest.raises(ProviderThrottledError) as caught:
        await twilio.sender.send(TO, BODY, None)
    assert (caught.value.status, caught.value.code) == (429, 20429)
    assert await every_listed(twilio, TO) == []
    retried = await twilio.sender.send(TO, BODY, None)  # always safe to retry
    listed = await listed_once_all_of(twilio, TO, {retried.sid})
    assert [m.sid for m in listed] == [retried.sid]


@pytest.mark.parametrize("fault", [*NOT_CREATED, *CREATED])
async def test_a_5xx_or_a_timeout_raises_unavailable_and_the_list_tells(
    twilio: TwilioUnderTest, fault: str
) -> None:
    await twilio.fail_next_create(TO, fault)
    with pytest.raises(ProviderUnavailableError) as caught:
        await twilio.sender.send(TO, BODY, None)
    if fault.startswith("500"):
        assert (caught.value.status, caught.value.code) == (500, 20500)
    else:
        assert str(caught.value) == "twilio timeout"
    if fault in CREATED:

        async def found() -> list[ListedMessage]:
            return [m for m in await every_listed(twilio, TO) if m.body_hash == body_hash(BODY)]

        assert len(await eventually(found, timeout=15, what="the created message")) == 1
    else:
        assert await every_listed(twilio, TO) == []
