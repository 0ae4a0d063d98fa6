"""How many segments each kind's templates take for typical values: the start-up warning."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import ValidationError

from schemas.events import SmsRequested
from sms_relay.domain.segments import SegmentCount, count_segments
from sms_relay.errors import ConfigurationError
from sms_relay.kinds.event_kind import EventKind

log = logging.getLogger(__name__)

# More than this for typical values and a text is worth a second look: Twilio bills each.
MAX_TYPICAL_SEGMENTS = 2
# The fields every event carries, which no template shows: fixed, fictional values.
_COMMON_FIELDS = {
    "eventId": "example_event_v1",
    "phone": "+12125550123",
    "consentAt": "2026-01-01T00:00:00Z",
}


@dataclass(frozen=True)
class LongTemplate:
    kind: str
    locale: str
    size: SegmentCount


def example_event(kind: EventKind) -> SmsRequested:
    """The kind's example as an event. Raises ConfigurationError (one line) when the
    example is not valid for the kind's model."""
    try:
        return kind.model.model_validate({**_COMMON_FIELDS, **kind.example})
    except ValidationError as error:
        where = ".".join(str(part) for part in error.errors()[0]["loc"])
        raise ConfigurationError(f"kind {kind.name}: its example is not valid ({where})") from None


def typical_segments(kind: EventKind) -> dict[str, SegmentCount]:
    """Each locale's text for the kind's example, counted as it would be sent."""
    event = example_event(kind)
    return {locale: count_segments(t.render(event)) for locale, t in kind.templates.items()}


def long_templates(kinds: Iterable[EventKind]) -> list[LongTemplate]:
    """The (kind, locale) texts over MAX_TYPICAL_SEGMENTS for typical values."""
    return [
        LongTemplate(kind.name, locale, size)
        for kind in kinds
        if kind.example
        for locale, size in typical_segments(kind).items()
        if size.segments > MAX_TYPICAL_SEGMENTS
    ]


def warn_long_templates(kinds: Iterable[EventKind]) -> None:
    """One warning per (kind, locale) whose text is long for typical values: the kind,
    locale, encoding and count, never the values or the text. Raises ConfigurationError
    when a kind's example is not valid."""
    kinds = list(kinds)
    for kind in kinds:
        if not kind.example:
            log.warning(
                "kind declares no example event; its texts' length is not checked",
                extra={"kind": kind.name},
            )
    for long in long_templates(kinds):
        log.warning(
            "template renders to more than %d segments for typical values",
            MAX_TYPICAL_SEGMENTS,
            extra={
                "kind": long.kind,
                "locale": long.locale,
                "encoding": long.size.encoding.value,
                "segments": long.size.segments,
            },
        )
