"""The segment counter against the vectors of Twilio's open-source segment calculator.

Vectors from TwilioDevEd/message-segment-calculator, tests/index.test.js at commit
a50230fddb2b4af8fd8e0a9497553883dfe5374e ("Basic tests", "GSM-7 Escape Characters",
"One grapheme UCS-2 characters", "Special tests", "Line break styles tests"). Their
`messageSize` is the body's size in bits without headers: 7 bits a septet, 16 a UTF-16 unit.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sms_relay.domain.segments import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    Encoding,
    count_segments,
    encoding_of,
)


def _digits(count: int, first: str = "1") -> str:
    """`count` digits cycling 1234567890 from `first`, as the calculator's bodies are written."""
    cycle = "1234567890"
    start = cycle.index(first)
    return "".join(cycle[(start + i) % 10] for i in range(count))


# (description, body, encoding, segments, messageSize in bits)
TWILIO_VECTORS = [
    ("GSM-7 in one segment", _digits(160), "GSM-7", 1, 1120),
    ("GSM-7 in two segments", _digits(161), "GSM-7", 2, 1127),
    ("GSM-7 in three segments", _digits(307), "GSM-7", 3, 2149),
    ("UCS-2 in one segment", "😜" + _digits(68, "2"), "UCS-2", 1, 1120),
    ("UCS-2 in two segments", "😜" + _digits(69, "2"), "UCS-2", 2, 1136),
    ("UCS-2 in three segments", "😜" + _digits(133, "2"), "UCS-2", 3, 2160),
    ("flag at the one segment boundary", "🇮🇹" + _digits(66, "2"), "UCS-2", 1, 1120),
    ("flag at the two segments boundary", "🇮🇹" + _digits(67, "2"), "UCS-2", 2, 1136),
    ("ZWJ emoji at the one segment boundary", "🏳️‍🌈" + _digits(64, "2"), "UCS-2", 1, 1120),
    ("ZWJ emoji at the two segments boundary", "🏳️‍🌈" + _digits(65, "2"), "UCS-2", 2, 1136),
]
GSM7_ESCAPES = ["|", "^", "€", "{", "}", "[", "]", "~", "\\"]
ONE_UNIT_UCS2 = ["Á", "Ú", "ú", "ç", "í", "Í", "ó", "Ó"]


@pytest.mark.parametrize(
    ("body", "encoding", "segments", "message_bits"),
    [vector[1:] for vector in TWILIO_VECTORS],
    ids=[vector[0] for vector in TWILIO_VECTORS],
)
def test_twilio_calculator_basic_vectors(
    body: str, encoding: str, segments: int, message_bits: int
) -> None:
    count = count_segments(body)
    unit_bits = 7 if encoding == "GSM-7" else 16
    assert (count.encoding.value, count.segments) == (encoding, segments)
    assert count.units * unit_bits == message_bits


@pytest.mark.parametrize("escape", GSM7_ESCAPES)
def test_an_extension_character_counts_two_septets(escape: str) -> None:
    one = count_segments(escape + _digits(158))
    two = count_segments(escape + _digits(159))
    assert (one.encoding, one.segments, one.units * 7) == (Encoding.GSM7, 1, 1120)
    assert (two.encoding, two.segments, two.units * 7) == (Encoding.GSM7, 2, 1127)


@pytest.mark.parametrize("character", ONE_UNIT_UCS2)
def test_accented_letters_outside_gsm7_make_ucs2_of_seventy_per_segment(character: str) -> None:
    one = count_segments(character * 70)
    assert (one.encoding, one.segments) == (Encoding.UCS2, 1)
    assert count_segments(character * 71).segments == 2


def test_gsm7_brackets_in_a_ucs2_body_count_one_unit() -> None:
    assert count_segments("😀" + "]" * 68).segments == 1
    assert count_segments("😀" + "]" * 69).segments == 2


def test_combining_accents_count_one_unit_each() -> None:
    accented = "e\u0301\u0301\u0301"  # the calculator's "triple accents": four code points
    assert count_segments(accented + "a" * 66).segments == 1
    assert count_segments(accented + "a" * 67).segments == 2


def test_line_breaks_are_gsm7_and_count_one_septet_each() -> None:
    count = count_segments("\rabcde\r\n123")
    assert (count.encoding, count.units) == (Encoding.GSM7, 11)


# ---- What the vectors above do not pin down: no split at a part boundary.


def test_an_extension_character_is_not_split_across_parts() -> None:
    # 152 + 2 + 152 = 306 septets: two full parts if the euro could be split, three if not.
    count = count_segments("a" * 152 + "€" + "a" * 152)
    assert (count.units, count.segments) == (306, 3)


def test_a_surrogate_pair_is_not_split_across_parts() -> None:
    # 66 + 2 + 66 = 134 units: two full parts if the pair could be split, three if not.
    count = count_segments("ж" * 66 + "😜" + "ж" * 66)
    assert (count.encoding, count.units, count.segments) == (Encoding.UCS2, 134, 3)


def test_one_character_outside_gsm7_makes_the_whole_body_ucs2() -> None:
    assert encoding_of("Your order 1001 has shipped") is Encoding.GSM7
    assert encoding_of("Ihre Bestellung 1001 ist unterwegs: Grüße") is Encoding.GSM7
    assert encoding_of("Ihre Bestellung ist “unterwegs”") is Encoding.UCS2  # curly quotes
    assert count_segments("").segments == 1


_gsm_text = st.text(alphabet=sorted(GSM7_BASIC | GSM7_EXTENSION), max_size=700)
_any_text = st.text(max_size=400)


@given(_gsm_text | _any_text)
def test_parts_hold_the_body_and_waste_at_most_one_unit_each(body: str) -> None:
    count = count_segments(body)
    single, per_part = (160, 153) if count.encoding is Encoding.GSM7 else (70, 67)
    if count.units <= single:
        assert count.segments == 1
    else:
        # Each part but the last loses at most one unit to a character kept whole.
        assert math.ceil(count.units / per_part) <= count.segments
        assert count.segments <= math.ceil(count.units / (per_part - 1))


@given(_gsm_text | _any_text, _gsm_text | _any_text)
def test_appending_text_never_needs_fewer_parts(body: str, more: str) -> None:
    before = count_segments(body)
    after = count_segments(body + more)
    if before.encoding is after.encoding:
        assert after.segments >= before.segments
