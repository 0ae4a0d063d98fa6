"""E.164 phone numbers: the strict shape first, then `phonenumbers` for real validity."""

from __future__ import annotations

import re
from typing import Annotated

import phonenumbers
from pydantic import AfterValidator

# \A...\Z and [0-9]: Python's `$` accepts a trailing newline and `\d` accepts other scripts.
_E164 = re.compile(r"\A\+[1-9][0-9]{6,14}\Z")


def check_e164(value: str) -> str:
    if not _E164.match(value):
        raise ValueError("phone must be in E.164 format: +, country code, up to 15 digits")
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise ValueError("phone is not a valid number") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("phone is not a valid number")
    return value


E164Phone = Annotated[str, AfterValidator(check_e164)]
