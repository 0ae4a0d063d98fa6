"""Capture every log line a flow writes (through the production formatter) and scan it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import quote

from sms_relay.logs import NOISY_LOGGERS, RedactingJsonFormatter


@dataclass
class Captured:
    stream: io.StringIO = field(default_factory=io.StringIO)

    @property
    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()


@contextmanager
def captured_logs(secrets: Iterable[str]) -> Iterator[Captured]:
    """All loggers at DEBUG (the noisy ones too) into the redacting JSON formatter."""
    captured = Captured()
    handler = logging.StreamHandler(captured.stream)
    handler.setFormatter(RedactingJsonFormatter(secrets))
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    noisy = [logging.getLogger(name) for name in NOISY_LOGGERS]
    levels = (root.level, [n.level for n in noisy])
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for logger in noisy:
        logger.setLevel(logging.DEBUG)
    try:
        yield captured
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        for logger, level in zip(noisy, levels[1], strict=True):
            logger.setLevel(level)


def phone_forms(number: str) -> list[str]:
    """How a number may leak: E.164, URL-encoded, digits only, national digits."""
    digits = number.lstrip("+")
    return [number, quote(number, safe=""), quote(quote(number, safe=""), safe=""), digits]


# Fields of a line that code sets (a logger name is a module's): not data, not scanned,
# so a secret that is also part of a module name (`sms_relay`) is no leak there.
STRUCTURE = ("ts", "level", "logger")


def leaks(lines: Iterable[str], forbidden: Iterable[str]) -> list[tuple[str, str]]:
    """(forbidden value, line) for every line with a forbidden value, any case, in a field
    that can carry data (everything but the time, level and logger name)."""
    values = [f for f in forbidden if f]
    found: list[tuple[str, str]] = []
    for line in lines:
        lowered = _data_of(line).lower()
        found.extend((value, line) for value in values if value.lower() in lowered)
    return found


def _data_of(line: str) -> str:
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    if not isinstance(entry, dict):
        return line
    return json.dumps({k: v for k, v in entry.items() if k not in STRUCTURE})
