"""SMS segments, pure: whether a body goes out as GSM-7 or UCS-2, and how many parts it takes.

We count the body exactly as we send it. Twilio's "smart encoding" (a Messaging Service
setting, off unless enabled) may swap some Unicode characters, such as curly quotes, for
GSM ones before sending; we do not model it: with it off (our default) the count is
exact, with it on ours can only be higher, so a warning or a cost estimate errs on the
safe side.

GSM-7: one septet per character of the basic table, two for the extension table
(`{}[]~^|\\€` and form feed: an escape and the character); 160 septets in one part, 153 per
part once a user data header is needed. UCS-2: one UTF-16 code unit per character, two
for one outside the Basic Multilingual Plane (a surrogate pair, e.g. most emoji); 70 in
one part, 67 per part. An extension character's two septets and a surrogate pair are
never split across parts. Twilio's own calculator keeps whole grapheme clusters (a flag,
a ZWJ emoji) in one part; we keep code points whole, so a cluster that straddles a part
boundary can cost Twilio one part more than we count.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# GSM 03.38 as Twilio's segment calculator maps it (src/libs/UnicodeToGSM.ts).
GSM7_BASIC = frozenset(
    "\n\r !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ_"
    "abcdefghijklmnopqrstuvwxyz¡£¤¥§¿ÄÅÆÉÑÖØÜßàäåæÇèéìñòöøùüΓΔΘΛΞΠΣΦΨΩ"
)
GSM7_EXTENSION = frozenset("\f[\\]^{|}~€")

_PART_BITS = 1120  # 140 octets of user data
_HEADER_BITS = 48  # the concatenation header every part of a long message carries


class Encoding(StrEnum):
    GSM7 = "GSM-7"
    UCS2 = "UCS-2"


@dataclass(frozen=True)
class SegmentCount:
    encoding: Encoding
    segments: int
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2) of the whole body


def encoding_of(body: str) -> Encoding:
    """GSM-7 when every character is in its basic or extension table, else UCS-2."""
    gsm = all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in body)
    return Encoding.GSM7 if gsm else Encoding.UCS2


def count_segments(body: str) -> SegmentCount:
    """The encoding, the number of parts and the units of `body` (an empty body is one part)."""
    encoding = encoding_of(body)
    if encoding is Encoding.GSM7:
        unit_bits = 7
        sizes = [2 if ch in GSM7_EXTENSION else 1 for ch in body]
    else:
        unit_bits = 16
        sizes = [2 if ord(ch) > 0xFFFF else 1 for ch in body]
    units = sum(sizes)
    if units <= _PART_BITS // unit_bits:
        return SegmentCount(encoding, 1, units)
    per_part = (_PART_BITS - _HEADER_BITS) // unit_bits
    return SegmentCount(encoding, _packed_parts(sizes, per_part), units)


def _packed_parts(sizes: list[int], per_part: int) -> int:
    """Parts needed to hold characters of `sizes` units in order, none split across two."""
    parts, free = 1, per_part
    for size in sizes:
        if size > free:
            parts, free = parts + 1, per_part
        free -= size
    return parts
