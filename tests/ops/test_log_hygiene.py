"""No log line carries a full phone number, a message body, a token or a Verify code.

Full flows run with every logger at DEBUG (the twilio SDK's request logs included)
through the production formatter; every captured line is then scanned.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from datetime import UTC, datetime, timedelta

import pytest

from sms_relay.adapters.twilio.twilio_client import close_client, create_client
from sms_relay.logs import (
    NOISY_LOGGERS,
    RedactingJsonFormatter,
    configure_logging,
    scrub,
    secrets_of,
)
from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.ops.helpers import state_of
from tests.ops.hygiene import captured_logs, leaks, phone_forms
from tests.support import committed_to_end, eventually, order_event, produce, running_consumer

pytestmark = pytest.mark.integration

PLAIN = "+12125550111"
RECONCILED = "+12125550112"  # a 500 after Twilio created the message: found by listing
RETRIED = "+13125550113"  # a 500 before creating: listed (not found), then sent again
INVALID = "+15005550001"  # Twilio's magic number: 400 with error 21211 naming the number
POISON = "+14155550114"  # inside an event that is not JSON
FUTURE = "+12125550120"  # an event whose consent lies in the future (schema violation)
VERIFIED = "+12125550121"  # a Verify start and check through the SDK
NUMBERS = [PLAIN, RECONCILED, RETRIED, INVALID, POISON, FUTURE, VERIFIED]


async def _verify(settings: Settings, simulator: SimulatorServer) -> str:
    """Start and check a verification through the twilio SDK; returns the code used."""
    client = create_client(settings.twilio)
    service = client.verify.v2.services(settings.twilio.verify_service_sid)
    try:
        await service.verifications.create_async(to=VERIFIED, channel="sms")
        code = await simulator.aclient.verification_code(VERIFIED)
        assert code is not None
        check = await service.verification_checks.create_async(to=VERIFIED, code=code)
        assert check.status == "approved"
    finally:
        await close_client(client)
    return code


async def test_full_flows_log_no_number_body_token_or_code(
    settings: Settings, simulator: SimulatorServer
) -> None:
    await simulator.aclient.script(RECONCILED, ["500_after_create"])
    await simulator.aclient.script(RETRIED, ["500"])
    good = [
        order_event(phone=phone, order_id=str(1001 + i))
        for i, phone in enumerate([PLAIN, RECONCILED, RETRIED, INVALID])
    ]
    future = order_event(phone=FUTURE, order_id="1099")
    future["consentAt"] = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    poison = (
        b'{"eventId": "poison_log_1", "phone": "' + POISON.encode() + b'", '
        b'"note": "Your order 1098 has shipped", oops'
    )
    secrets = secrets_of(settings)

    with captured_logs(secrets) as logs:
        produce(settings, settings.kafka.topic_order_shipped, [*good, future, poison])
        async with running_consumer(settings):
            await eventually(
                lambda: (
                    [state_of(settings, e["eventId"]) for e in good]
                    == ["accepted", "accepted", "accepted", "failed"]
                ),
                timeout=30,
                what="every event settled",
            )
            # The rejected records processed (and logged) too: their lines are scanned.
            await committed_to_end(settings, settings.kafka.topic_order_shipped)
        code = await _verify(settings, simulator)
        logging.getLogger("tests.control").info("settled to %s", PLAIN)

    lines = logs.lines
    assert all(isinstance(json.loads(line), dict) for line in lines)  # one object per line
    # The scan covered what matters: our own lines and the SDK's request logs, masked.
    assert any('"outcome": "sent"' in line and "+*******0111" in line for line in lines)
    assert any("twilio" in json.loads(line)["logger"] for line in lines)
    assert any("%2B*******0112" in line or "+*******0112" in line for line in lines)
    assert any("settled to +*******0111" in line for line in lines)

    token = settings.twilio.auth_token.get_secret_value()
    basic = base64.b64encode(f"{settings.twilio.account_sid}:{token}".encode()).decode()
    forbidden = [
        *(form for number in NUMBERS for form in phone_forms(number)),
        *(f"Your order {e['orderId']} has shipped" for e in [*good, future]),
        "Your order 1098 has shipped",
        "has shipped",
        token,
        basic,
        *secrets,
    ]
    assert leaks(lines, forbidden) == []
    assert not [line for line in lines if re.search(rf"(?<![0-9]){code}(?![0-9])", line)]


def test_the_scan_finds_a_raw_number_it_is_shown() -> None:
    control = f"sent to {PLAIN} / To=%2B{PLAIN[1:]}"
    assert {value for value, _ in leaks([control], phone_forms(PLAIN))} == {
        PLAIN,
        "%2B" + PLAIN[1:],
        PLAIN[1:],
    }
    assert leaks([scrub(control)], phone_forms(PLAIN)) == []


@pytest.mark.parametrize(
    ("raw", "must_not_contain"),
    [
        ("Query Params: {'To': '+12125550111'}", "12125550111"),
        ("GET /Messages.json?To=%2B12125550111&PageSize=100", "12125550111"),
        ("double-encoded %252B12125550111", "12125550111"),
        ("spaced +1 212-555-0111", "212-555"),
        ("form Body=Your+order+1001+has+shipped&To=x", "Your+order"),
        ("{'Body': 'Your order 1001 has shipped'}", "Your order"),
        ('{"code": "123456"}', "123456"),
        ("Authorization: Basic QUNhYmNkZWYwMTIzNDU2Nzg5OnNlY3JldA==", "QUNhYmNk"),
        ("token s3cret-t0ken and s3cret-t0ken%21", "s3cret"),
    ],
)
def test_redaction_covers_encodings_keys_and_secrets(raw: str, must_not_contain: str) -> None:
    formatter = RedactingJsonFormatter(["s3cret-t0ken", "s3cret-t0ken!"])
    record = logging.makeLogRecord({"msg": raw, "levelname": "INFO", "name": "third.party"})
    line = formatter.format(record)
    assert must_not_contain not in line
    assert json.loads(line)["logger"] == "third.party"


def test_extra_fields_are_redacted_and_error_codes_kept() -> None:
    record = logging.makeLogRecord(
        {"msg": "event settled", "levelname": "INFO", "name": "consumer.loop"}
    )
    record.__dict__.update({"to": PLAIN, "body": "Your order 1001 has shipped", "errorCode": 21211})
    entry = json.loads(RedactingJsonFormatter().format(record))
    assert entry["to"] == "+*******0111"
    assert entry["body"] == "[redacted]"
    assert entry["errorCode"] == 21211


def test_a_logger_name_survives_a_secret_that_is_part_of_it() -> None:
    # The local stack's database password is `sms_relay`, the name of our package.
    record = logging.makeLogRecord(
        {
            "msg": "connect to postgresql://sms_relay:sms_relay@db/x failed",
            "levelname": "WARNING",
            "name": "sms_relay.domain.destinations",
        }
    )
    record.__dict__["error"] = "password sms_relay refused"
    entry = json.loads(RedactingJsonFormatter(["sms_relay"]).format(record))
    assert (entry["logger"], entry["level"]) == ("sms_relay.domain.destinations", "warning")
    assert "sms_relay" not in entry["msg"]
    assert entry["error"] == "password [redacted] refused"


def test_a_short_secret_is_redacted_alone_but_not_inside_other_words() -> None:
    formatter = RedactingJsonFormatter(["relay"])
    record = logging.makeLogRecord(
        {"msg": "relayed with password relay (relay%21)", "levelname": "INFO", "name": "x"}
    )
    assert json.loads(formatter.format(record))["msg"] == (
        "relayed with password [redacted] ([redacted]%21)"
    )


def test_configure_logging_quiets_the_twilio_sdk_request_logs() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, [logging.getLogger(n).level for n in NOISY_LOGGERS])
    try:
        configure_logging("DEBUG", secrets=["x-secret-value"])
        assert all(
            logging.getLogger(n).getEffectiveLevel() == logging.WARNING for n in NOISY_LOGGERS
        )
        assert isinstance(root.handlers[0].formatter, RedactingJsonFormatter)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, level in zip(NOISY_LOGGERS, saved[2], strict=True):
            logging.getLogger(name).setLevel(level)


DELIVERED = "+12125550131"  # consumer sends, the simulator calls back, callbacks record
VIA_HTTP = "+12125550132"  # POST /api/order-shipped-sms
OPTED_OUT = "+12125550133"  # inbound STOP, HELP and START
FORGED = "+12125550134"  # a status callback with a bad signature
CODE_FOR = "+12125550135"  # Verify start and check over the HTTP API
BAD_INPUT = "+1555012345"  # not a valid number: refused by every endpoint
CALLBACK_NUMBERS = [DELIVERED, VIA_HTTP, OPTED_OUT, FORGED, CODE_FOR, BAD_INPUT]


async def test_callbacks_flows_log_no_number_body_token_or_code(
    settings: Settings, simulator: SimulatorServer
) -> None:
    from tests.callbacks.conftest import callbacks_settings, running_callbacks

    app_settings = callbacks_settings(settings)
    secrets = secrets_of(app_settings)
    delivered = order_event(phone=DELIVERED, order_id="3101")
    via_http = order_event(phone=VIA_HTTP, order_id="3102")
    with captured_logs(secrets) as logs:
        async with running_callbacks(app_settings) as app, running_consumer(app_settings):
            produce(app_settings, app_settings.kafka.topic_order_shipped, [delivered])
            key = await app.new_key()
            status, _, _ = await app.post_event(via_http, key)
            assert status == 202
            status, _, _ = await app.post_event(
                {**via_http, "phone": BAD_INPUT, "eventId": "bad_1x"}, key
            )
            assert status == 400
            assert (await app.post_event(via_http, key + "x"))[0] == 401
            await eventually(
                lambda: (
                    state_of(app_settings, delivered["eventId"]) == "delivered"
                    and state_of(app_settings, via_http["eventId"]) == "delivered"
                ),
                timeout=30,
                what="both delivered",
            )
            inbound = app.base_url + "/twilio/inbound"
            for word in ("STOP", "HELP", "START"):
                answer = await simulator.aclient.send_inbound(OPTED_OUT, word, url=inbound)
                assert answer.status == 200
            forged = {"MessageSid": "SM" + "0" * 32, "MessageStatus": "delivered", "To": FORGED}
            status, _ = await app.post_signed(
                "/twilio/status-callback?eventId=x", forged, signature="forged"
            )
            assert status == 403
            assert (await app.post_json("/api/verify/start", {"phone": CODE_FOR}))[0] == 202
            code = await simulator.aclient.verification_code(CODE_FOR)
            assert code is not None
            checked = await app.post_json("/api/verify/check", {"phone": CODE_FOR, "code": code})
            assert checked[0] == 200
            assert (await app.post_json("/api/verify/start", {"phone": BAD_INPUT}))[0] == 400

    lines = logs.lines
    assert any("callbacks" in json.loads(line)["logger"] for line in lines)
    token = app_settings.twilio.auth_token.get_secret_value()
    forbidden = [
        *(form for number in CALLBACK_NUMBERS for form in phone_forms(number)),
        "has shipped",
        token,
        key.split("_", 2)[2],  # an API key's secret part
        *secrets,
    ]
    assert leaks(lines, forbidden) == []
    assert not [line for line in lines if re.search(rf"(?<![0-9]){code}(?![0-9])", line)]
