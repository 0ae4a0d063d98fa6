"""The DLQ a page at a time: filters applied while reading, the ledger asked per page."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO

from sms_relay.adapters.postgres import deliveries, dlq_replays
from sms_relay.adapters.postgres.engine import AsyncEngine
from sms_relay.ops.dlq_reader import DlqRecord, Offsets

PAGE_SIZE = 500


@dataclass(frozen=True)
class Filters:
    reason: str | None = None
    event_ids: frozenset[str] | None = None
    since: datetime | None = None
    until: datetime | None = None
    error_code: int | None = None  # in the ledger: checked once the page is annotated

    def matches_record(self, r: DlqRecord) -> bool:
        """What the record itself says: reason, eventId, time."""
        return (
            (self.reason is None or r.reason == self.reason)
            and (self.event_ids is None or r.event_id in self.event_ids)
            and (self.since is None or (r.timestamp is not None and r.timestamp >= self.since))
            and (self.until is None or (r.timestamp is not None and r.timestamp < self.until))
        )

    def matches_ledger(self, r: DlqRecord) -> bool:
        return self.error_code is None or r.error_code == self.error_code


@dataclass
class Page:
    """Records that match, oldest first, annotated; `through`: per partition the offset
    after the last record examined for this page (matching or not)."""

    records: list[DlqRecord]
    through: Offsets = field(default_factory=dict)


class ScanProgress:
    """`dlq: read 12,000 of 200,000 record(s), 7 matched` on stderr, at most once a
    second while reading, and once more at the end."""

    def __init__(self, total: int, stream: IO[str] | None = None, every: float = 1.0) -> None:
        self.total = total
        self.read = 0
        self.matched = 0
        self._stream = stream or sys.stderr
        self._every = every
        self._last = time.monotonic()

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            self._draw()

    def _draw(self) -> None:
        self._stream.write(
            f"\rdlq: read {self.read:,} of {self.total:,} record(s), {self.matched:,} matched"
        )
        self._stream.flush()

    def finish(self) -> None:
        self._draw()
        self._stream.write("\n")
        self._stream.flush()


async def annotate(engine: AsyncEngine, topic: str, records: list[DlqRecord]) -> None:
    """Fill in each record's ledger state and error code and how often it was replayed:
    two statements per page, whatever the size of the topic."""
    if not records:
        return
    states = await deliveries.states_of(engine, sorted({r.event_id for r in records if r.event_id}))
    counts = await dlq_replays.replay_counts(
        engine, topic, [(r.partition, r.offset) for r in records]
    )
    for record in records:
        if record.event_id in states:
            record.state, record.error_code = states[record.event_id]
        record.replays = counts.get((record.partition, record.offset), 0)


async def pages(
    engine: AsyncEngine,
    records: Iterator[DlqRecord],
    topic: str,
    starts: Mapping[int, int],
    filters: Filters,
    progress: ScanProgress,
    stop: Callable[[], bool] = lambda: False,
    size: int = PAGE_SIZE,
) -> AsyncGenerator[Page, None]:
    """Pages of at most `size` examined records, matching records annotated; the last
    page comes when the records run out or `stop()` says so (checked per record)."""
    through = dict(starts)
    chosen: list[DlqRecord] = []
    examined = 0
    with contextlib.closing(records):  # type: ignore[type-var]
        for record in records:
            examined += 1
            progress.read += 1
            through[record.partition] = record.offset + 1
            if filters.matches_record(record):
                chosen.append(record)
            if examined >= size or stop():
                yield await _page(engine, topic, chosen, through, filters)
                progress.tick()
                chosen, examined = [], 0
                if stop():
                    return
        yield await _page(engine, topic, chosen, through, filters)


async def _page(
    engine: AsyncEngine, topic: str, chosen: list[DlqRecord], through: Offsets, filters: Filters
) -> Page:
    await annotate(engine, topic, chosen)
    return Page([r for r in chosen if filters.matches_ledger(r)], dict(through))
