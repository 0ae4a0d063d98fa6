"""What `dlq list|replay` print, written as the pages come: a table or one JSON document."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import IO, Any

from sms_relay.ops.dlq_reader import DlqRecord

HEADER = [
    "time",
    "part/offset",
    "eventId",
    "reason",
    "error",
    "attempt",
    "state",
    "code",
    "replays",
]


def row(record: DlqRecord) -> list[str]:
    d = record.as_dict()
    return [
        d["time"] or "-",
        f"{d['partition']}/{d['offset']}",
        d["eventId"] or "-",
        d["reason"] or "-",
        d["error"] or "-",
        str(d["attempt"] if d["attempt"] is not None else "-"),
        d["state"] or "-",
        str(d["errorCode"] or "-"),
        str(d["replays"]),
    ]


class TableStream:
    """Left-aligned columns sized on the first rows written (a longer cell later only
    pushes its own line), the header printed once."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream or sys.stdout
        self._widths: list[int] | None = None

    def write(self, records: list[DlqRecord]) -> None:
        rows = [row(r) for r in records]
        if self._widths is None:
            if not rows:
                return
            self._start(rows)
        for cells in rows:
            self._line(cells)

    def close(self) -> None:
        """The header alone when no row came."""
        if self._widths is None:
            self._start([])

    def _start(self, rows: list[list[str]]) -> None:
        widths = [len(h) for h in HEADER]
        for cells in rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, cells, strict=True)]
        self._widths = widths
        self._line(HEADER)

    def _line(self, cells: list[str]) -> None:
        assert self._widths is not None
        padded = (cell.ljust(w) for cell, w in zip(cells, self._widths, strict=True))
        self._stream.write("  ".join(padded).rstrip() + "\n")


class JsonStream:
    """One JSON document whose list `name` is written item by item: a list alone
    (`name` None) or an object with that list first and `close(rest)`'s keys after it."""

    def __init__(self, name: str | None = None, stream: IO[str] | None = None) -> None:
        self._stream = stream or sys.stdout
        self._name = name
        self._first = True
        self._opened = False

    def _open(self) -> None:
        """Nothing is printed before the first record or the end, so a command that fails
        early prints only its error line."""
        if not self._opened:
            self._opened = True
            self._stream.write(f'{{\n  "{self._name}": [' if self._name else "[")

    def write(self, records: list[DlqRecord]) -> None:
        self._open()
        indent = "    " if self._name else "  "
        for record in records:
            text = json.dumps(record.as_dict())  # one line each: the C encoder, fast
            self._stream.write(("\n" if self._first else ",\n") + indent + text)
            self._first = False

    def close(self, rest: Mapping[str, Any] | None = None) -> None:
        self._open()
        end = "" if self._first else ("\n  " if self._name else "\n")
        self._stream.write(end + "]")
        if self._name:
            for key, value in (rest or {}).items():
                self._stream.write(f",\n  {json.dumps(key)}: {json.dumps(value)}")
            self._stream.write("\n}")
        self._stream.write("\n")
        self._stream.flush()
