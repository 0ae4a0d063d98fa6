"""Segments of each kind's texts for typical values: the shipped templates stay short, and
a long one is named at start-up (kind, locale, encoding, count; never the values)."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from sms_relay.domain.segments import Encoding
from sms_relay.errors import ConfigurationError
from sms_relay.kinds.order_shipped import ORDER_SHIPPED
from sms_relay.kinds.registry import EVENT_KINDS
from sms_relay.kinds.templates import Template
from sms_relay.kinds.typical_length import (
    MAX_TYPICAL_SEGMENTS,
    long_templates,
    typical_segments,
    warn_long_templates,
)

LOGGER = "sms_relay.kinds.typical_length"


def test_every_kind_declares_an_example_and_its_texts_take_at_most_two_segments() -> None:
    for kind in EVENT_KINDS.values():
        assert kind.example, f"{kind.name} declares no example event"
        sizes = typical_segments(kind)
        assert sizes.keys() == kind.templates.keys()
        for locale, size in sizes.items():
            assert size.segments <= MAX_TYPICAL_SEGMENTS, (kind.name, locale, size)
    assert long_templates(EVENT_KINDS.values()) == []


def test_a_long_template_warns_once_per_kind_and_locale_without_the_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 156 characters for the example's order id: one GSM-7 part would almost hold them,
    # but the curly quotes make it UCS-2, 67 units a part: three parts.
    long_en = Template("Your order “{orderId}” has shipped. " + "Thank you for shopping. " * 5)
    long_kind = replace(
        ORDER_SHIPPED,
        templates={**ORDER_SHIPPED.templates, "en": long_en},
    )
    expected = typical_segments(long_kind)["en"]
    assert expected.encoding is Encoding.UCS2
    assert expected.segments == 3

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        warn_long_templates([long_kind, ORDER_SHIPPED])

    warnings = [r for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    (warning,) = warnings
    assert (warning.kind, warning.locale) == ("order-shipped", "en")  # type: ignore[attr-defined]
    assert warning.encoding == "UCS-2"  # type: ignore[attr-defined]
    assert warning.segments == 3  # type: ignore[attr-defined]
    assert "2 segments" in warning.getMessage()
    shown = warning.getMessage() + repr(vars(warning))
    for value in ORDER_SHIPPED.example.values():
        assert value not in shown
    assert "Thank you" not in shown


def test_a_kind_without_an_example_is_named_and_one_with_a_broken_example_stops_start_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        warn_long_templates([replace(ORDER_SHIPPED, example={})])
    assert [r.kind for r in caplog.records] == ["order-shipped"]  # type: ignore[attr-defined]
    assert "no example" in caplog.records[0].getMessage()

    broken = replace(ORDER_SHIPPED, example={"orderId": "not an id"})
    with pytest.raises(ConfigurationError, match="kind order-shipped: its example is not valid"):
        warn_long_templates([broken])
