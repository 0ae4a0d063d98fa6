"""Inbound SMS keywords: opt-out, opt-in and help, answered in TwiML."""

from __future__ import annotations

import pytest
from pydantic import AnyHttpUrl

from sms_relay.masking import phone_hash
from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from sms_relay.status.opt_out import Keyword, classify
from tests.callbacks.conftest import (
    Callbacks,
    callbacks_settings,
    new_sid,
    query_rows,
    running_callbacks,
)
from tests.support import reserved_port

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


def inbound_form(account_sid: str, sid: str, sender: str, body: str) -> dict[str, str]:
    """The form the simulator (like Twilio) posts for an inbound SMS."""
    return {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "Body": body,
        "From": sender,
        "MessageSid": sid,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsMessageSid": sid,
        "SmsSid": sid,
        "SmsStatus": "received",
        "To": "+15005550006",
    }


async def test_a_start_retried_after_a_later_stop_resubscribes_no_one(
    callbacks: Callbacks, simulator: SimulatorServer, database_url: str
) -> None:
    phone = "+12125550163"
    url = callbacks.base_url + "/twilio/inbound"
    client = simulator.aclient
    account = callbacks.settings.twilio.account_sid
    # The START reaches Twilio first, but its webhook fails (here: a wrong path, 404).
    start = await client.send_inbound(phone, "START", url=callbacks.base_url + "/nowhere")
    assert start.status == 404
    await client.advance_clock(5)
    stop = await client.send_inbound(phone, "STOP", url=url)
    assert stop.status == 200
    # Twilio retries the START now, after the STOP: it is older, so it changes nothing.
    retried = await callbacks.post_signed(
        "/twilio/inbound", inbound_form(account, start.message_sid, phone, "START")
    )
    assert retried[0] == 200
    assert suppressed(database_url, callbacks.settings, phone) != []
    rows = query_rows(
        database_url, "SELECT action, applied FROM inbound_keywords ORDER BY received_at"
    )
    assert rows == [{"action": "opt_in", "applied": False}, {"action": "opt_out", "applied": True}]


async def test_replayed_keywords_have_no_second_effect(
    callbacks: Callbacks, simulator: SimulatorServer, database_url: str
) -> None:
    phone = "+12125550164"
    url = callbacks.base_url + "/twilio/inbound"
    client = simulator.aclient
    account = callbacks.settings.twilio.account_sid
    stop = await client.send_inbound(phone, "STOP", url=url)
    await client.advance_clock(5)
    start = await client.send_inbound(phone, "START", url=url)
    assert suppressed(database_url, callbacks.settings, phone) == []
    # A captured STOP replayed (with a fresh idempotency token) does not opt out again.
    replay = await callbacks.post_signed(
        "/twilio/inbound",
        inbound_form(account, stop.message_sid, phone, "STOP"),
        token="a-fresh-token",
    )
    assert replay[0] == 200
    assert suppressed(database_url, callbacks.settings, phone) == []
    # Nor does a replayed START resubscribe after a newer STOP.
    await client.advance_clock(5)
    await client.send_inbound(phone, "STOP", url=url)
    await callbacks.post_signed(
        "/twilio/inbound", inbound_form(account, start.message_sid, phone, "START")
    )
    assert suppressed(database_url, callbacks.settings, phone) != []
    # HELP is answered once per message: a replay gets no second reply SMS.
    help_ = await client.send_inbound(phone, "HELP", url=url)
    assert "<Message>" in help_.body
    again = await callbacks.post_signed(
        "/twilio/inbound", inbound_form(account, help_.message_sid, phone, "HELP")
    )
    assert again[1].endswith("<Response/>")


async def test_an_opt_in_twilio_cannot_date_is_refused_and_an_opt_out_is_not(
    settings: Settings, database_url: str
) -> None:
    """Twilio unreachable for the fetch: STOP still applies, START asks for a retry."""
    away = settings.twilio.model_copy(
        update={"api_base_url": AnyHttpUrl(f"http://127.0.0.1:{reserved_port()}")}
    )
    app_settings = callbacks_settings(settings, twilio=away, callbacks_run_projection=False)
    phone = "+12125550165"
    account = settings.twilio.account_sid
    async with running_callbacks(app_settings) as callbacks:
        stop = await callbacks.post_signed(
            "/twilio/inbound", inbound_form(account, new_sid(), phone, "STOP")
        )
        start = await callbacks.post_signed(
            "/twilio/inbound", inbound_form(account, new_sid(), phone, "START")
        )
    assert stop[0] == 200
    assert (start[0], start[1]["error"]) == (503, "unavailable")
    assert suppressed(database_url, settings, phone) != []
