"""Inbound SMS keywords: opt-out, opt-in and help, answered in TwiML."""

from __future__ import annotations

import pytest

from sms_relay.masking import phone_hash
from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from sms_relay.suppression import Keyword, classify
from tests.callbacks.conftest import Callbacks, new_sid, query_rows

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("body", "keyword"),
    [
        ("STOP", Keyword.OPT_OUT),
        (" stop\n", Keyword.OPT_OUT),
        ("StopAll", Keyword.OPT_OUT),
        ("unsubscribe", Keyword.OPT_OUT),
        ("cancel", Keyword.OPT_OUT),
        ("END", Keyword.OPT_OUT),
        ("quit", Keyword.OPT_OUT),
        ("revoke", Keyword.OPT_OUT),
        ("optout", Keyword.OPT_OUT),
        ("start", Keyword.OPT_IN),
        ("Yes", Keyword.OPT_IN),
        ("UNSTOP", Keyword.OPT_IN),
        ("help", Keyword.HELP),
        ("INFO ", Keyword.HELP),
        ("stop it", Keyword.OTHER),
        ("please stop", Keyword.OTHER),
        ("", Keyword.OTHER),
    ],
)
def test_keywords_match_the_whole_trimmed_body_case_insensitively(
    body: str, keyword: Keyword
) -> None:
    assert classify(body) is keyword


def suppressed(database_url: str, settings: Settings, phone: str) -> list[dict[str, object]]:
    return query_rows(
        database_url,
        "SELECT phone_masked, reason FROM suppressions WHERE phone_hash = :h",
        h=phone_hash(settings.phone_hash_key.get_secret_value(), phone),
    )


async def test_stop_start_and_help_through_the_simulator(
    callbacks: Callbacks, simulator: SimulatorServer, database_url: str
) -> None:
    phone = "+12125550162"
    url = callbacks.base_url + "/twilio/inbound"
    client = simulator.aclient

    stop = await client.send_inbound(phone, "UNSUBSCRIBE", url=url)
    assert (stop.status, stop.content_type) == (200, "text/xml")
    assert suppressed(database_url, callbacks.settings, phone) == [
        {"phone_masked": "+*******0162", "reason": "opt_out"}
    ]
    again = await client.send_inbound(phone, "stop", url=url)
    assert again.status == 200  # a second STOP changes nothing

    help_ = await client.send_inbound(phone, "help", url=url)
    assert help_.body.endswith(
        f"<Response><Message>{callbacks.settings.callbacks_help_text}</Message></Response>"
    )
    other = await client.send_inbound(phone, "when does my parcel come?", url=url)
    assert other.body.endswith("<Response/>")
    assert suppressed(database_url, callbacks.settings, phone) != []

    # Twilio's receipt times have whole seconds, and an opt-in never wins a tie.
    await client.advance_clock(2)
    start = await client.send_inbound(phone, "Start", url=url)
    assert start.body.endswith("<Response/>")
    assert suppressed(database_url, callbacks.settings, phone) == []
    # Nothing in clear: only the keyed hash and the masked number are stored.
    assert phone not in str(query_rows(database_url, "SELECT * FROM suppressions"))


async def test_an_inbound_form_without_a_sender_is_400(callbacks: Callbacks) -> None:
    form = {
        "AccountSid": callbacks.settings.twilio.account_sid,
        "MessageSid": new_sid(),
        "To": "+15005550006",
        "Body": "STOP",
    }
    status, body = await callbacks.post_signed("/twilio/inbound", form)
    assert status == 400
    assert [f["field"] for f in body["fields"]] == ["From"]
