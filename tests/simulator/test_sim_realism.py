"""Twilio's queue and list behaviour: queued messages have no date_sent and are invisible to
DateSent filters; a sender's rate spaces its messages out; lists lag behind creation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sms_relay.simulator.server import SimulatorServer
from tests.support import eventually, eventually_sync

from .conftest import MakeAsyncClient, MakeClient, MakeSimulator
from .helpers import SENDER, WebhookReceiver

TO = "+12125550123"
OTHER_SENDER = "+14155550100"
A_DAY = timedelta(days=1)


def _sent(client: Any, sid: str) -> Any:
    message = client.messages(sid).fetch()
    return message if message.date_sent is not None else None


def test_queued_messages_have_no_date_sent_and_dateSent_skips_them(
    make_simulator: MakeSimulator, make_client: MakeClient
) -> None:
    sim = make_simulator(queue_hold_ms=2000)
    client = make_client(sim)

    created = client.messages.create(to=TO, from_=SENDER, body="held")
    queued = client.messages(created.sid).fetch()
    today = created.date_created.date()
    by_recipient = client.messages.list(to=TO)
    by_date_sent = client.messages.list(to=TO, date_sent_after=today - A_DAY)
    on_the_day = client.messages.list(to=TO, date_sent=today)

    assert (created.status, created.date_sent) == ("queued", None)
    assert (queued.status, queued.date_sent) == ("queued", None)
    assert [m.sid for m in by_recipient] == [created.sid]
    assert by_date_sent == []
    assert on_the_day == []
    sent = eventually_sync(lambda: _sent(client, created.sid), timeout=10)
    # date_sent has whole seconds; the hold was 2 s (plus the step to `sent`).
    assert sent.date_sent - sent.date_created >= timedelta(seconds=2)
    listed = client.messages.list(to=TO, date_sent_after=sent.date_sent.date())
    assert [m.sid for m in listed] == [created.sid]


async def test_a_held_message_goes_sending_then_sent_with_callbacks_after_the_hold(
    make_simulator: MakeSimulator, make_async_client: MakeAsyncClient, receiver: WebhookReceiver
) -> None:
    sim = make_simulator(queue_hold_ms=300, callback_delay_ms=400)
    client = make_async_client(sim)

    created = await client.messages.create_async(
        to=TO, from_=SENDER, body="held", status_callback=receiver.url("/status")
    )

    async def fetched() -> Any:
        return await client.messages(created.sid).fetch_async()

    sending = await eventually(
        lambda: _with_status(fetched(), "sending"), timeout=10, interval=0.02
    )
    assert sending.date_sent is None
    assert await client.messages.list_async(to=TO, date_sent=created.date_created.date()) == []
    await eventually(lambda: len(receiver.requests) >= 2, timeout=10)
    # No callback for the initial `queued`, nor for `sending` (Twilio sends none either).
    assert [r.form["MessageStatus"] for r in receiver.requests] == ["sent", "delivered"]
    assert (await fetched()).date_sent is not None


async def _with_status(message: Any, status: str) -> Any:
    found = await message
    return found if found.status == status else None


async def test_sender_mps_spaces_a_senders_segments_and_not_other_senders(
    make_simulator: MakeSimulator, make_async_client: MakeAsyncClient, receiver: WebhookReceiver
) -> None:
    sim = make_simulator(sender_mps=2)
    client = make_async_client(sim)
    url = receiver.url("/status")
    long_body = "x" * 200  # two GSM-7 segments: two slots of the sender's queue
    before = datetime.now(UTC)
    first = await client.messages.create_async(
        to=TO, from_=SENDER, body=long_body, status_callback=url
    )
    second = await client.messages.create_async(to=TO, from_=SENDER, body="b", status_callback=url)
    third = await client.messages.create_async(to=TO, from_=SENDER, body="c", status_callback=url)
    other = await client.messages.create_async(
        to=TO, from_=OTHER_SENDER, body="d", status_callback=url
    )

    await eventually(lambda: len(receiver.with_status("sent")) >= 4, timeout=10)

    sent_at = {
        entry["message_sid"]: datetime.fromisoformat(entry["time"])
        for entry in await sim.aclient.callbacks()
        if entry["message_status"] == "sent" and entry["attempt"] == 1
    }
    assert first.num_segments == "2"
    # The queue's slots count from the first create: `sent` at 0 s, 1 s (after two
    # segments), 1.5 s. Measured from before that create, as a busy host only makes a
    # step late (the gap between two late steps can shrink below a slot).
    assert sent_at[second.sid] - before >= timedelta(seconds=0.95)
    assert sent_at[third.sid] - before >= timedelta(seconds=1.45)
    # Another sender has its own queue: it does not wait behind the first sender's backlog.
    assert sent_at[other.sid] < sent_at[third.sid]


def test_list_lag_hides_a_new_message_from_lists_but_not_from_fetch(
    make_simulator: MakeSimulator, make_client: MakeClient
) -> None:
    sim = make_simulator(list_lag_ms=1500)
    client = make_client(sim)

    created = client.messages.create(to=TO, from_=SENDER, body="lagging")
    fetched = client.messages(created.sid).fetch()
    listed_at_once = client.messages.list(to=TO)

    assert fetched.sid == created.sid
    assert listed_at_once == []
    listed = eventually_sync(lambda: client.messages.list(to=TO), timeout=10)
    assert [m.sid for m in listed] == [created.sid]


async def test_list_lag_with_the_async_client(
    make_simulator: MakeSimulator, make_async_client: MakeAsyncClient
) -> None:
    sim = make_simulator(list_lag_ms=800)
    client = make_async_client(sim)

    created = await client.messages.create_async(to=TO, from_=SENDER, body="lagging")

    assert await client.messages.list_async(to=TO) == []
    listed = await eventually(lambda: client.messages.list_async(to=TO), timeout=10)
    assert [m.sid for m in listed] == [created.sid]


def test_realism_is_off_by_default(simulator: SimulatorServer, twilio_client: Any) -> None:
    created = twilio_client.messages.create(to=TO, from_=SENDER, body="prompt")

    assert [m.sid for m in twilio_client.messages.list(to=TO)] == [created.sid]
    sent = eventually_sync(lambda: _sent(twilio_client, created.sid))
    assert sent.date_sent - sent.date_created <= timedelta(seconds=1)
    settings = simulator.configure()
    assert (settings["queue_hold_ms"], settings["sender_mps"], settings["list_lag_ms"]) == (0, 0, 0)
