"""Whose fault a refused create is: one table, and the errors the adapter makes of it."""

from __future__ import annotations

import pytest
from twilio.base.exceptions import TwilioRestException

from sms_relay.adapters.twilio.twilio_client import _translate
from sms_relay.domain.twilio_codes import Fault, fault_of
from sms_relay.errors import (
    ProviderAccountError,
    ProviderRejectedError,
    ProviderThrottledError,
    ProviderUnavailableError,
)

# The recipient's own: invalid, unreachable, unsubscribed, not SMS-capable.
RECIPIENT = [21211, 21214, 21610, 21612, 21614]
# Ours: credentials, the sender, the account's geo permissions.
ACCOUNT = [20003, 21606, 21659, 21408]


@pytest.mark.parametrize("code", RECIPIENT)
def test_recipient_codes_are_the_recipients_fault(code: int) -> None:
    assert fault_of(400, code) is Fault.RECIPIENT


@pytest.mark.parametrize("code", ACCOUNT)
def test_account_codes_are_ours(code: int) -> None:
    assert fault_of(400, code) is Fault.ACCOUNT


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("code", [None, 20003, 21211])
def test_401_and_403_are_ours_whatever_the_code(status: int, code: int | None) -> None:
    assert fault_of(status, code) is Fault.ACCOUNT


def test_a_code_missing_from_the_table_counts_as_ours() -> None:
    # Final only when Twilio says the number is at fault; otherwise retried and alerted.
    assert fault_of(400, 29999) is Fault.ACCOUNT
    assert fault_of(400, None) is Fault.ACCOUNT


def _refused(status: int, code: int | None) -> TwilioRestException:
    return TwilioRestException(status, "https://api.twilio.com/x", "refused", code, "POST")


@pytest.mark.parametrize("code", RECIPIENT)
def test_the_adapter_makes_recipient_codes_final(code: int) -> None:
    error = _translate(_refused(400, code))
    assert type(error) is ProviderRejectedError
    assert error.code == code


@pytest.mark.parametrize(
    ("status", "code"), [(401, 20003), (403, None), *((400, c) for c in ACCOUNT)]
)
def test_the_adapter_makes_account_codes_account_errors(status: int, code: int | None) -> None:
    error = _translate(_refused(status, code))
    assert isinstance(error, ProviderAccountError)
    assert (error.status, error.code) == (status, code)


def test_429_and_5xx_stay_as_they_were() -> None:
    assert isinstance(_translate(_refused(429, 20429)), ProviderThrottledError)
    assert isinstance(_translate(_refused(500, 20500)), ProviderUnavailableError)
    assert isinstance(_translate(_refused(503, 20503)), ProviderUnavailableError)
