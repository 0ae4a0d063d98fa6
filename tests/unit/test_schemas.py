"""Wire formats: validation rules and the committed JSON Schemas."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.events import OrderShipped
from schemas.export import HERE, MODELS, render


def event(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "eventId": "order_1001_shipped_v1",
        "phone": "+12125550123",
        "orderId": "1001",
        "consentAt": "2026-06-02T09:00:00.000Z",
    }
    return {**base, **changes}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_committed_json_schemas_match_the_models(name: str) -> None:
    committed = (HERE / f"{name}.schema.json").read_text()
    assert committed == render(MODELS[name]), "run `python -m schemas.export` and commit"


@pytest.mark.parametrize(
    "phone",
    [
        "+15558675310",  # the article's example: not a valid number
        "12125550123",  # no plus
        "+12125550123\n",  # `$` would accept the newline
        "+1212555012\uff13",  # a full-width digit that `\d` would accept
        "+0212555012",
        "+1 212 555 0123",
    ],
)
def test_phone_must_be_a_valid_e164_number(phone: str) -> None:
    with pytest.raises(ValidationError) as error:
        OrderShipped.model_validate(event(phone=phone))
    assert phone.strip() not in str(error.value)  # errors never echo the value


def test_consent_in_the_future_or_without_zone_is_rejected() -> None:
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    for consent in (future, "2026-06-02T09:00:00", None):
        with pytest.raises(ValidationError):
            OrderShipped.model_validate(event(consentAt=consent))


def test_unknown_fields_are_kept() -> None:
    parsed = OrderShipped.model_validate_json(json.dumps(event(channel="web")))
    assert parsed.model_extra == {"channel": "web"}


@given(st.text(min_size=1, max_size=30))
def test_arbitrary_phone_text_never_crashes_validation(phone: str) -> None:
    """Any text is either a refusal of the phone field alone, or an E.164 number kept
    as it was sent; never another exception."""
    errors: list[object] = []
    parsed = None
    try:
        parsed = OrderShipped.model_validate(event(phone=phone))
    except ValidationError as error:
        errors = [e["loc"] for e in error.errors()]
    if parsed is None:
        assert errors == [("phone",)]
    else:
        digits = phone.removeprefix("+")
        assert parsed.phone == phone
        assert phone.startswith("+")
        assert digits.isascii()
        assert digits.isdigit()
