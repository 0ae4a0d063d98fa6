"""Messages API through the real twilio SDK: create, fetch, list, auth, validation, magic."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException

from sms_relay.simulator.server import SimulatorServer
from tests.support import eventually_sync

from .conftest import MakeClient
from .helpers import ACCOUNT_SID, SENDER, simulator_log

TO = "+12125550123"


def _delivered(client: Any, sid: str) -> Any:
    """The message once delivered, else None."""
    message = client.messages(sid).fetch()
    return message if message.status == "delivered" else None


def test_create_answers_a_twilio_shaped_message(twilio_client: Any) -> None:
    message = twilio_client.messages.create(to=TO, from_=SENDER, body="Your order shipped")

    assert re.fullmatch(r"SM[0-9a-f]{32}", message.sid)
    assert message.account_sid == ACCOUNT_SID
    assert message.to == TO
    assert message.from_ == SENDER
    assert message.body == "Your order shipped"
    assert message.status == "queued"
    assert message.direction == "outbound-api"
    assert message.api_version == "2010-04-01"
    assert message.num_segments == "1"
    assert message.error_code is None
    assert message.date_created.tzinfo is not None
    assert abs(message.date_created - datetime.now(UTC)) < timedelta(minutes=1)
    assert message.uri == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{message.sid}.json"


def test_fetch_shows_the_status_progressing_to_delivered(twilio_client: Any) -> None:
    created = twilio_client.messages.create(to=TO, from_=SENDER, body="hello")

    fetched = eventually_sync(lambda: _delivered(twilio_client, created.sid))

    assert fetched.sid == created.sid
    assert fetched.date_sent is not None
    assert fetched.price is not None


def test_fetch_of_an_unknown_sid_is_20404(twilio_client: Any) -> None:
    with pytest.raises(TwilioRestException) as caught:
        twilio_client.messages("SM" + "0" * 32).fetch()

    assert (caught.value.status, caught.value.code) == (404, 20404)


def test_list_filters_by_recipient_and_pages_newest_first(twilio_client: Any) -> None:
    bodies = [f"message {i}" for i in range(7)]
    for body in bodies:
        twilio_client.messages.create(to=TO, from_=SENDER, body=body)
    twilio_client.messages.create(to="+12125550999", from_=SENDER, body="someone else")

    listed = twilio_client.messages.list(to=TO, page_size=3)

    assert [m.body for m in listed] == list(reversed(bodies))
    first = twilio_client.messages.page(to=TO, page_size=3)
    assert len(list(first)) == 3
    second = first.next_page()
    assert second is not None
    assert [m.body for m in second] == ["message 3", "message 2", "message 1"]
    third = second.next_page()
    assert third is not None
    assert [m.body for m in third] == ["message 0"]
    assert third.next_page() is None


def test_list_filters_by_sender_and_limit(twilio_client: Any) -> None:
    twilio_client.messages.create(to=TO, from_=SENDER, body="a")
    twilio_client.messages.create(to=TO, from_="+14155550100", body="b")
    twilio_client.messages.create(to=TO, from_="+14155550100", body="c")

    from_other = twilio_client.messages.list(from_="+14155550100")
    limited = twilio_client.messages.list(limit=2)

    assert sorted(m.body for m in from_other) == ["b", "c"]
    assert len(limited) == 2


def _sent(client: Any, sid: str) -> Any:
    """The message once it has a date_sent, else None."""
    message = client.messages(sid).fetch()
    return message if message.date_sent is not None else None


def test_date_sent_filters_compare_whole_gmt_days(twilio_client: Any) -> None:
    created = twilio_client.messages.create(to=TO, from_=SENDER, body="today")
    sent = eventually_sync(lambda: _sent(twilio_client, created.sid)).date_sent
    today = sent.date()
    a_day = timedelta(days=1)

    def count(**filters: Any) -> int:
        return len(twilio_client.messages.list(to=TO, **filters))

    assert count(date_sent=today) == 1
    assert count(date_sent=today - a_day) == 0
    assert count(date_sent_after=today) == 1
    assert count(date_sent_after=today + a_day) == 0
    assert count(date_sent_before=today) == 1
    assert count(date_sent_before=today - a_day) == 0
    assert count(date_sent_before=date(2000, 1, 1)) == 0
    # The SDK sends date-times (YYYY-MM-DDTHH:MM:SSZ); Twilio documents whole days, so a
    # time later than the message still matches "sent on or after" its day.
    assert count(date_sent_after=sent + timedelta(seconds=1)) == 1
    assert count(date_sent_before=sent - timedelta(seconds=1)) == 1


@pytest.mark.parametrize(
    "value",
    ["{day}", "{day}T00:00:00Z", "{day}T23:59:59.500+00:00", "{day}T12:00:00+0000", "{day} 08:30"],
)
def test_date_sent_accepts_days_and_iso_date_times(twilio_client: Any, value: str) -> None:
    created = twilio_client.messages.create(to=TO, from_=SENDER, body="x")
    day = eventually_sync(lambda: _sent(twilio_client, created.sid)).date_sent.date()

    listed = twilio_client.messages.list(to=TO, date_sent=value.format(day=day.isoformat()))

    assert [m.sid for m in listed] == [created.sid]


def test_date_sent_offsets_convert_to_gmt(twilio_client: Any) -> None:
    created = twilio_client.messages.create(to=TO, from_=SENDER, body="x")
    day = eventually_sync(lambda: _sent(twilio_client, created.sid)).date_sent.date()
    # 23:00 at UTC-05:00 is 04:00 GMT the next day.
    previous_evening = f"{(day - timedelta(days=1)).isoformat()}T23:00:00-05:00"

    assert len(twilio_client.messages.list(to=TO, date_sent=previous_evening)) == 1


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01", ">=2024-01-01", "2024-01-01T25:00"])
def test_malformed_date_sent_is_400_20001(twilio_client: Any, value: str) -> None:
    # The SDK raises a bare TwilioException carrying the response for a failed list page.
    with pytest.raises(TwilioException) as caught:
        twilio_client.messages.list(to=TO, date_sent=value)

    response = caught.value.args[1]
    assert (response.status_code, json.loads(response.text)["code"]) == (400, 20001)


async def test_async_client_creates_fetches_and_pages(async_twilio_client: Any) -> None:
    for i in range(5):
        await async_twilio_client.messages.create_async(to=TO, from_=SENDER, body=f"async {i}")

    listed = await async_twilio_client.messages.list_async(to=TO, page_size=2)
    fetched = await async_twilio_client.messages(listed[0].sid).fetch_async()

    assert [m.body for m in listed] == [f"async {i}" for i in reversed(range(5))]
    assert fetched.body == "async 4"


def test_wrong_token_is_401_20003(simulator: SimulatorServer, make_client: MakeClient) -> None:
    client = make_client(simulator, password="wrong-token")

    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to=TO, from_=SENDER, body="x")

    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert simulator.messages() == []


def test_other_account_in_the_path_is_404_20404(
    simulator: SimulatorServer, make_client: MakeClient
) -> None:
    client = make_client(simulator, account_sid="AC" + "9" * 32)

    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to=TO, from_=SENDER, body="x")

    assert (caught.value.status, caught.value.code) == (404, 20404)
    assert simulator.messages() == []


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"from_": SENDER, "body": "no recipient", "to": ""}, 21604),
        ({"to": TO, "from_": SENDER}, 21602),
        ({"to": TO, "body": "no sender"}, 21603),
        ({"to": "not-a-number", "from_": SENDER, "body": "x"}, 21211),
    ],
)
def test_invalid_create_is_rejected_with_twilios_code(
    twilio_client: Any, simulator: SimulatorServer, params: dict[str, str], code: int
) -> None:
    with pytest.raises(TwilioRestException) as caught:
        twilio_client.messages.create(**params)

    assert (caught.value.status, caught.value.code) == (400, code)
    assert simulator.messages()[-1]["created"] is False


@pytest.mark.parametrize(
    ("sender", "to", "code"),
    [
        ("+15005550001", TO, 21212),
        ("+15005550007", TO, 21606),
        ("+15005550008", TO, 21611),
        (SENDER, "+15005550001", 21211),
        (SENDER, "+15005550002", 21612),
        (SENDER, "+15005550003", 21408),
        (SENDER, "+15005550004", 21610),
        (SENDER, "+15005550009", 21614),
    ],
)
def test_magic_test_numbers_surface_their_error_code(
    twilio_client: Any, sender: str, to: str, code: int
) -> None:
    with pytest.raises(TwilioRestException) as caught:
        twilio_client.messages.create(to=to, from_=sender, body="magic")

    assert (caught.value.status, caught.value.code) == (400, code)
    assert twilio_client.messages.list(to=to) == []


def test_messaging_service_messages_start_accepted(twilio_client: Any) -> None:
    service = "MG" + "c3" * 16

    message = twilio_client.messages.create(to=TO, messaging_service_sid=service, body="hi")

    assert message.status == "accepted"
    assert message.messaging_service_sid == service
    assert message.from_ is None
    delivered = eventually_sync(lambda: _delivered(twilio_client, message.sid))
    assert delivered.from_ == SENDER


def test_logs_never_show_numbers_or_bodies(
    twilio_client: Any, simulator: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    message = twilio_client.messages.create(to=TO, from_=SENDER, body="secret body text")
    twilio_client.messages.list(to=TO)
    eventually_sync(lambda: simulator.messages()[0]["message_status"] == "delivered")

    # The access log line is written just after the answer: wait for it.
    simulator_lines = eventually_sync(
        lambda: text if "GET /2010-04-01" in (text := simulator_log(caplog.records)) else None
    )
    assert "/Messages.json" in simulator_lines
    assert message.sid in simulator_lines
    assert TO not in simulator_lines
    assert TO.replace("+", "%2B") not in simulator_lines
    assert "secret body text" not in simulator_lines
