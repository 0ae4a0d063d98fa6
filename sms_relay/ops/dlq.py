"""`sms-relay dlq list` and what `dlq replay` shares with it: the filters, the topic of a
kind, the span of offsets a run reads, a run over the pages.

Both read the DLQ in pages (`dlq_pages`) up to the end offsets taken at the start,
filters applied while reading and the ledger asked a page at a time, so a DLQ of
200,000 records is read in bounded memory; `--limit` stops the reading once satisfied.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sms_relay.adapters.postgres.engine import AsyncEngine
from sms_relay.errors import OpsError
from sms_relay.kinds.registry import EVENT_KINDS
from sms_relay.ops.common import add_json_flag, parse_time, run_with_engine
from sms_relay.ops.dlq_output import JsonStream, TableStream
from sms_relay.ops.dlq_pages import PAGE_SIZE, Filters, ScanProgress, pages
from sms_relay.ops.dlq_reader import DlqRecord, Offsets, TopicScan
from sms_relay.settings import Settings

_REASON = re.compile(r"[a-z][a-z0-9_]*")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _reason(text: str) -> str:
    if not _REASON.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a dlq-reason (lower case, like retries_exhausted)"
        )
    return text


def configure_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kind",
        choices=sorted(EVENT_KINDS),
        default="order-shipped",
        help="the event kind whose DLQ to read (default: %(default)s)",
    )
    parser.add_argument(
        "--reason", type=_reason, help="only this dlq-reason (retries_exhausted, ...)"
    )
    parser.add_argument(
        "--event-id",
        action="append",
        dest="event_ids",
        metavar="EVENT_ID",
        help="only records of this eventId (repeat for several)",
    )
    parser.add_argument(
        "--error-code", type=int, help="only events whose ledger error code is this (e.g. 20429)"
    )
    parser.add_argument("--since", type=parse_time, help="dead-lettered at or after (ISO time)")
    parser.add_argument("--until", type=parse_time, help="dead-lettered before (ISO time)")
    parser.add_argument(
        "--limit",
        type=_positive,
        help="at most this many records (oldest first); reading stops once they are found",
    )
    parser.add_argument(
        "--page-size",
        type=_positive,
        default=PAGE_SIZE,
        help="records read per page: what is held in memory and asked of PostgreSQL at "
        "once (default: %(default)s)",
    )
    add_json_flag(parser)


def buffer_for(page_size: int) -> int:
    """Records held in all while merging the partitions: a few pages, so a partition is
    paused (and fetched again) rarely, whatever the number of partitions."""
    return 8 * page_size


def topics_of(kind: str, settings: Settings) -> tuple[str, str]:
    """(its DLQ, its input topic, where replays go) of an event kind."""
    topic = settings.kafka.topic_of(kind)
    return settings.kafka.dlq_topic(topic), topic


def filters_of(
    reason: str | None,
    event_ids: list[str] | None,
    error_code: int | None,
    since: datetime | None,
    until: datetime | None,
) -> Filters:
    """Raises OpsError when the time range is empty."""
    if since is not None and until is not None and since >= until:
        raise OpsError("--since must be before --until")
    ids = frozenset(event_ids) if event_ids else None
    return Filters(reason, ids, since, until, error_code)


@dataclass(frozen=True)
class Span:
    """Where a run starts reading each partition, and the end offsets it reads to."""

    starts: Offsets
    ends: Offsets

    @property
    def total(self) -> int:
        return sum(max(0, end - self.starts.get(p, 0)) for p, end in self.ends.items())


def span_now(scan: TopicScan, since: datetime | None) -> Span:
    """From each partition's first record (or the first at `since`) to its end now."""
    marks = scan.watermarks()
    ends = {p: high for p, (_low, high) in marks.items()}
    starts = {p: low for p, (low, _high) in marks.items()}
    if since is not None and any(ends[p] > starts[p] for p in ends):
        at = scan.offsets_at(since, ends)
        starts = {p: max(starts[p], at.get(p, starts[p])) for p in starts}
    return Span(starts, ends)


def handle_list(args: argparse.Namespace, settings: Settings) -> int:
    filters = filters_of(args.reason, args.event_ids, args.error_code, args.since, args.until)
    topic, _main = topics_of(args.kind, settings)
    with TopicScan(settings.kafka, topic, buffer=buffer_for(args.page_size)) as scan:
        span = span_now(scan, filters.since)
        progress = ScanProgress(span.total)
        out: JsonStream | TableStream = JsonStream() if args.json else TableStream()

        async def work(engine: AsyncEngine) -> int:
            return await list_pages(
                engine, scan, span, filters, args.limit, args.page_size, progress, out.write
            )

        try:
            listed = run_with_engine(settings, work)
        finally:
            progress.finish()
    if isinstance(out, JsonStream):
        out.close()
    else:
        out.close()
        print(f"{listed} record(s) on {topic}")
    return 0


async def list_pages(
    engine: AsyncEngine,
    scan: TopicScan,
    span: Span,
    filters: Filters,
    limit: int | None,
    page_size: int,
    progress: ScanProgress,
    write: Callable[[list[DlqRecord]], None],
) -> int:
    """Write each page's matches until the records or the limit run out; returns how many."""
    listed = 0
    records = scan.records(span.starts, span.ends)
    paged = pages(engine, records, scan.topic, span.starts, filters, progress, size=page_size)
    async with contextlib.aclosing(paged):
        async for page in paged:
            chosen = page.records if limit is None else page.records[: limit - listed]
            listed += len(chosen)
            progress.matched = listed
            write(chosen)
            if limit is not None and listed >= limit:
                break
    return listed
