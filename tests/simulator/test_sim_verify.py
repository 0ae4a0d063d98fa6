"""Verify v2 through the real twilio SDK: codes, checks, limits, expiry and privacy."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from twilio.base.exceptions import TwilioRestException

from sms_relay.simulator.server import SimulatorServer
from tests.support import eventually_sync

from .conftest import MakeClient
from .helpers import ACCOUNT_SID, SERVICE_SID, simulator_log

TO = "+12125550123"


def _service(client: Any) -> Any:
    return client.verify.v2.services(SERVICE_SID)


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def _check(client: Any, code: str, to: str = TO) -> Any:
    return _service(client).verification_checks.create(to=to, code=code)


def test_start_answers_a_pending_verification(
    twilio_client: Any, simulator: SimulatorServer
) -> None:
    verification = _service(twilio_client).verifications.create(to=TO, channel="sms")

    assert re.fullmatch(r"VE[0-9a-f]{32}", verification.sid)
    assert (verification.service_sid, verification.account_sid) == (SERVICE_SID, ACCOUNT_SID)
    assert (verification.to, verification.channel) == (TO, "sms")
    assert (verification.status, verification.valid) == ("pending", False)
    assert verification.date_created is not None
    code = simulator.verification_code(TO)
    assert code is not None
    assert re.fullmatch(r"\d{6}", code)


def test_wrong_code_stays_pending_and_right_code_approves(
    twilio_client: Any, simulator: SimulatorServer
) -> None:
    _service(twilio_client).verifications.create(to=TO, channel="sms")
    code = simulator.verification_code(TO)
    assert code is not None

    wrong = _check(twilio_client, _wrong(code))
    right = _check(twilio_client, code)

    assert (wrong.status, wrong.valid) == ("pending", False)
    assert (right.status, right.valid) == ("approved", True)
    with pytest.raises(TwilioRestException) as caught:
        _check(twilio_client, code)
    assert (caught.value.status, caught.value.code) == (404, 20404)


def test_check_by_verification_sid(twilio_client: Any, simulator: SimulatorServer) -> None:
    verification = _service(twilio_client).verifications.create(to=TO, channel="sms")
    code = simulator.verification_code(TO)

    check = _service(twilio_client).verification_checks.create(
        verification_sid=verification.sid, code=code
    )

    assert (check.sid, check.status) == (verification.sid, "approved")


def test_sixth_check_is_60202_and_then_the_verification_is_gone(
    twilio_client: Any, simulator: SimulatorServer
) -> None:
    _service(twilio_client).verifications.create(to=TO, channel="sms")
    code = simulator.verification_code(TO)
    assert code is not None

    answers = [_check(twilio_client, _wrong(code)).status for _ in range(5)]
    with pytest.raises(TwilioRestException) as sixth:
        _check(twilio_client, code)
    with pytest.raises(TwilioRestException) as seventh:
        _check(twilio_client, code)

    assert answers == ["pending"] * 5
    assert (sixth.value.status, sixth.value.code) == (429, 60202)
    assert (seventh.value.status, seventh.value.code) == (404, 20404)


def test_sixth_send_within_ten_minutes_is_60203(
    twilio_client: Any, simulator: SimulatorServer
) -> None:
    sids = {
        _service(twilio_client).verifications.create(to=TO, channel="sms").sid for _ in range(5)
    }

    with pytest.raises(TwilioRestException) as caught:
        _service(twilio_client).verifications.create(to=TO, channel="sms")

    assert (caught.value.status, caught.value.code) == (429, 60203)
    assert len(sids) == 1  # a resend while pending keeps the verification (and its code)
    simulator.advance_clock(601)
    assert _service(twilio_client).verifications.create(to=TO, channel="sms").sid not in sids


def test_expired_verification_is_404(twilio_client: Any, simulator: SimulatorServer) -> None:
    _service(twilio_client).verifications.create(to=TO, channel="sms")
    code = simulator.verification_code(TO)
    assert code is not None

    simulator.advance_clock(10 * 60)

    with pytest.raises(TwilioRestException) as caught:
        _check(twilio_client, code)
    assert (caught.value.status, caught.value.code) == (404, 20404)


def test_check_without_verification_is_404(twilio_client: Any) -> None:
    with pytest.raises(TwilioRestException) as caught:
        _check(twilio_client, "123456")

    assert (caught.value.status, caught.value.code) == (404, 20404)


def test_invalid_channel_is_60200(twilio_client: Any) -> None:
    with pytest.raises(TwilioRestException) as caught:
        _service(twilio_client).verifications.create(to=TO, channel="pigeon")

    assert (caught.value.status, caught.value.code) == (400, 60200)


def test_verify_checks_basic_auth(simulator: SimulatorServer, make_client: MakeClient) -> None:
    client = make_client(simulator, password="not-the-token")

    with pytest.raises(TwilioRestException) as caught:
        _service(client).verifications.create(to=TO, channel="sms")

    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert simulator.verification_code(TO) is None


def test_codes_and_numbers_never_reach_the_logs(
    twilio_client: Any, simulator: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _service(twilio_client).verifications.create(to=TO, channel="sms")
    code = simulator.verification_code(TO)
    assert code is not None
    _check(twilio_client, code)

    # The access log line is written just after the answer: wait for it.
    simulator_lines = eventually_sync(
        lambda: text if "/VerificationCheck" in (text := simulator_log(caplog.records)) else None
    )
    assert "/VerificationCheck" in simulator_lines
    assert code not in simulator_lines
    assert TO not in simulator_lines
    assert TO.replace("+", "%2B") not in simulator_lines
