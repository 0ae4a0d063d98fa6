"""The loop of `dlq replay`: the pages of a run, decided record by record, replayed a
chunk per transaction with the run's positions (see `dlq_replay` for the guarantees)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from sms_relay.adapters.kafka.headers import (
    ATTEMPT,
    ORIGIN,
    REPLAYED_FROM,
    KafkaHeaders,
    encode_headers,
)
from sms_relay.adapters.kafka.producer import produce_when_room
from sms_relay.adapters.postgres import dlq_replay_runs, dlq_replays
from sms_relay.adapters.postgres.engine import AsyncEngine
from sms_relay.errors import OpsError
from sms_relay.ops.dlq_pages import Filters, Page, ScanProgress, pages
from sms_relay.ops.dlq_reader import DlqRecord, Offsets, TopicScan

CHUNK = 50  # records per transaction (and per flush of the producer)


@dataclass(frozen=True)
class Plan:
    """What a run replays: from which DLQ to which topic, with which filters."""

    dlq_topic: str
    target: str
    filters: Filters
    limit: int | None
    include_invalid: bool
    again: bool
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Tally:
    """What this invocation did; `matched` (for the limit) and `replayed_before` count
    from the run's start when it resumes one."""

    run_id: int | None = None
    matched: int = 0
    replayed: int = 0
    replayed_before: int = 0
    would_replay: int = 0
    reset: int = 0
    invalid_skipped: int = 0
    replayed_skipped: int = 0
    invalid_replayed: int = 0
    interrupted: bool = False


def _headers(record: DlqRecord) -> KafkaHeaders:
    origin = {name: record.headers[name] for name in ORIGIN if name in record.headers}
    return encode_headers({REPLAYED_FROM: record.where, ATTEMPT: 0, **origin})


def _produce(producer: Producer, topic: str, chunk: list[DlqRecord]) -> None:
    """Produce the original bytes and key; raises OpsError unless all were acknowledged."""
    failures: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(error)

    for record in chunk:
        produce_when_room(
            producer, topic, record.value, record.key, _headers(record), on_delivery=on_delivery
        )
    remaining = producer.flush(30)
    if remaining or failures:
        first = failures[0].str() if failures else "flush timed out"
        raise OpsError(
            f"Kafka did not acknowledge {remaining + len(failures)} replayed record(s): {first}"
        )


@dataclass
class Replayer:
    """One run over the pages of `scan`; `producer` None is a dry run (nothing written)."""

    engine: AsyncEngine
    plan: Plan
    tally: Tally
    producer: Producer | None
    operator: str
    write: Callable[[list[DlqRecord]], None]
    positions: Offsets = field(default_factory=dict)
    _chunk: list[DlqRecord] = field(default_factory=list)

    async def run(
        self,
        scan: TopicScan,
        ends: Offsets,
        progress: ScanProgress,
        stop: Callable[[], bool],
        page_size: int,
    ) -> None:
        """Replay every record the plan chooses between `positions` and `ends`, or until
        the limit is met or `stop()`; raises OpsError (Kafka) or Database*Error."""
        records = scan.records(self.positions, ends)
        starts = dict(self.positions)
        paged = pages(
            self.engine, records, scan.topic, starts, self.plan.filters, progress, stop, page_size
        )
        async with contextlib.aclosing(paged):
            await self._replay_pages(paged, progress, stop)

    async def _replay_pages(
        self, paged: AsyncGenerator[Page, None], progress: ScanProgress, stop: Callable[[], bool]
    ) -> None:
        limit = self.plan.limit
        async for page in paged:
            limited = False
            for record in page.records:
                if limit is not None and self.tally.matched >= limit:
                    limited = True
                    break
                self.tally.matched += 1
                progress.matched = self.tally.matched
                self._decide(record)
                self.positions[record.partition] = record.offset + 1
                if len(self._chunk) >= CHUNK:
                    await self._flush()
            if not limited:
                self.positions.update(page.through)
            await self._flush()
            if limited or (limit is not None and self.tally.matched >= limit):
                return
            if stop():
                self.tally.interrupted = True
                return

    def _decide(self, record: DlqRecord) -> None:
        if record.invalid and not self.plan.include_invalid:
            self.tally.invalid_skipped += 1
        elif record.replays and not self.plan.again:
            self.tally.replayed_skipped += 1
        else:
            self.tally.invalid_replayed += record.invalid
            self._chunk.append(record)

    async def _flush(self) -> None:
        """Replay the chunk and move the run to `positions`, in one transaction."""
        chunk, self._chunk = self._chunk, []
        if self.producer is None:
            self.tally.would_replay += len(chunk)
            self.write(chunk)
            return
        assert self.tally.run_id is not None
        step = dlq_replays.RunStep(self.tally.run_id, dict(self.positions), self.tally.matched)
        if not chunk:
            await dlq_replay_runs.advance(self.engine, step.run_id, step.positions, step.matched)
            return
        replays = [
            dlq_replays.Replay(
                r.event_id, r.topic, r.partition, r.offset, r.reason, self.operator, step.run_id
            )
            for r in chunk
        ]
        producer, target = self.producer, self.plan.target
        self.tally.reset += await dlq_replays.replay(
            self.engine, replays, lambda: _produce(producer, target, chunk), step
        )
        self.tally.replayed += len(chunk)
        self.write(chunk)
