"""`sms-relay dlq list|replay`: inspect the dead-letter topic and send records back.

A replay goes through the normal path: the record is produced to the main topic again,
so the consumer's dedupe, suppression and consent checks all apply. For a delivery the
ledger holds as `dead_lettered`, the replay first sets it back to `retry_scheduled` with
an expired lease (the only transition this command makes), in the same transaction as
its audit row. The record is produced before that transaction commits: a failed produce
changes nothing, and a failed commit leaves a record the ledger still holds as
`dead_lettered`, which the consumer skips as a duplicate (replay it again). Until the
commit, a consumer claiming the same event waits on the row lock.
"""

from __future__ import annotations

import argparse
import getpass
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message, Producer

from sms_relay.adapters.kafka.clients import create_producer
from sms_relay.adapters.kafka.headers import (
    ATTEMPT,
    ORIGIN,
    REPLAYED_FROM,
    KafkaHeaders,
    encode_headers,
)
from sms_relay.adapters.kafka.producer import produce_when_room
from sms_relay.adapters.postgres import dlq_replays
from sms_relay.adapters.postgres.engine import AsyncEngine
from sms_relay.errors import OpsError
from sms_relay.kinds.registry import unknown_kinds
from sms_relay.ops.common import (
    KAFKA_LOGGER,
    Progress,
    add_json_flag,
    emit,
    parse_time,
    run_with_engine,
    table,
)
from sms_relay.ops.dlq_reader import DlqRecord, Filters, annotate, read_topic
from sms_relay.settings import Settings

CHUNK = 50


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        return "unknown"


def configure_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kind",
        default="order-shipped",
        help="whose dead-letter topic: the event kind (default: order-shipped)",
    )
    parser.add_argument("--reason", help="only this dlq-reason (retries_exhausted, ...)")
    parser.add_argument(
        "--error-code", type=int, help="only events whose ledger error code is this (e.g. 20429)"
    )
    parser.add_argument("--since", type=parse_time, help="dead-lettered at or after (ISO time)")
    parser.add_argument("--until", type=parse_time, help="dead-lettered before (ISO time)")
    parser.add_argument("--limit", type=int, help="at most this many records (oldest first)")
    add_json_flag(parser)


def configure_replay(parser: argparse.ArgumentParser) -> None:
    configure_filters(parser)
    parser.add_argument("--dry-run", action="store_true", help="show what would be replayed")
    parser.add_argument(
        "--operator", default=_operator(), help="who replays, for the audit row (default: $USER)"
    )
    parser.add_argument(
        "--include-invalid",
        action="store_true",
        help="also replay invalid_json / schema_violation records as they are "
        "(they are rejected again unless upstream fixed them)",
    )
    parser.add_argument(
        "--again", action="store_true", help="also replay records that were replayed before"
    )


def _filters(args: argparse.Namespace) -> Filters:
    if args.limit is not None and args.limit < 1:
        raise OpsError("--limit must be at least 1")
    return Filters(args.reason, args.error_code, args.since, args.until, args.limit)


def _topics(args: argparse.Namespace, settings: Settings) -> tuple[str, str]:
    """The kind's dead-letter topic and its input topic (where replays go)."""
    problem = unknown_kinds([args.kind])
    if problem is not None:
        raise OpsError(f"--kind: {problem}")
    topic = settings.kafka.topic_of(args.kind)
    return settings.kafka.dlq_topic(topic), topic


def _load(args: argparse.Namespace, settings: Settings) -> list[DlqRecord]:
    records = read_topic(settings.kafka, _topics(args, settings)[0])
    run_with_engine(settings, lambda engine: annotate(engine, records))
    return records


def _rows(records: list[DlqRecord]) -> list[list[str]]:
    return [
        [
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
        for d in (r.as_dict() for r in records)
    ]


_HEADER = [
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


def handle_list(args: argparse.Namespace, settings: Settings) -> int:
    records = _filters(args).select(_load(args, settings))
    emit(
        args,
        [r.as_dict() for r in records],
        lambda: (
            table(_rows(records), _HEADER)
            + f"\n{len(records)} record(s) on {_topics(args, settings)[0]}"
        ),
    )
    return 0


@dataclass
class Plan:
    replay: list[DlqRecord] = field(default_factory=list)
    invalid_skipped: list[DlqRecord] = field(default_factory=list)
    replayed_skipped: list[DlqRecord] = field(default_factory=list)
    reset: int = 0

    @property
    def invalid_replayed(self) -> int:
        return sum(1 for r in self.replay if r.invalid)


def plan(records: list[DlqRecord], include_invalid: bool, again: bool) -> Plan:
    result = Plan()
    for record in records:
        if record.invalid and not include_invalid:
            result.invalid_skipped.append(record)
        elif record.replays and not again:
            result.replayed_skipped.append(record)
        else:
            result.replay.append(record)
    return result


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


async def _replay_chunk(
    engine: AsyncEngine, producer: Producer, topic: str, chunk: list[DlqRecord], operator: str
) -> int:
    """One transaction per chunk: reset, audit, produce, then commit. Returns rows reset."""
    replays = [
        dlq_replays.Replay(r.event_id, r.topic, r.partition, r.offset, r.reason, operator)
        for r in chunk
    ]
    return await dlq_replays.replay(engine, replays, lambda: _produce(producer, topic, chunk))


def handle_replay(args: argparse.Namespace, settings: Settings) -> int:
    if not args.operator:
        raise OpsError("--operator must not be empty")
    filters = _filters(args)
    source, target = _topics(args, settings)
    records = read_topic(settings.kafka, source)

    async def work(engine: AsyncEngine) -> Plan:
        await annotate(engine, records)
        chosen = plan(filters.select(records), args.include_invalid, args.again)
        if args.dry_run or not chosen.replay:
            return chosen
        producer = create_producer(settings.kafka, logger=KAFKA_LOGGER)
        progress = Progress(len(chosen.replay))
        try:
            for start in range(0, len(chosen.replay), CHUNK):
                chunk = chosen.replay[start : start + CHUNK]
                chosen.reset += await _replay_chunk(engine, producer, target, chunk, args.operator)
                progress.advance(len(chunk))
        finally:
            progress.finish()
        return chosen

    result = run_with_engine(settings, work)
    data = {
        "dryRun": bool(args.dry_run),
        "topic": target,
        "replayed": 0 if args.dry_run else len(result.replay),
        "wouldReplay": len(result.replay) if args.dry_run else 0,
        "deliveriesReset": result.reset,
        "skippedInvalid": len(result.invalid_skipped),
        "skippedAlreadyReplayed": len(result.replayed_skipped),
        "records": [r.as_dict() for r in result.replay],
    }
    emit(args, data, lambda: _summary(result, args, settings))
    return 0


def _summary(result: Plan, args: argparse.Namespace, settings: Settings) -> str:
    source, target = _topics(args, settings)
    count = len(result.replay)
    lines = []
    if args.dry_run:
        if result.replay:
            lines.append(table(_rows(result.replay), _HEADER))
        lines.append(f"dry run: would replay {count} record(s) from {source} to {target}")
    else:
        lines.append(
            f"replayed {count} record(s) from {source} to {target} "
            f"({result.reset} dead-lettered deliveries set back to retry_scheduled)"
        )
    if result.invalid_skipped:
        lines.append(
            f"skipped {len(result.invalid_skipped)} invalid record(s) (invalid_json / "
            "schema_violation); --include-invalid replays them as they are"
        )
    if result.replayed_skipped:
        lines.append(
            f"skipped {len(result.replayed_skipped)} record(s) replayed before; --again "
            "replays them anyway (the ledger still sends each event at most once)"
        )
    if result.invalid_replayed:
        lines.append(
            f"note: {result.invalid_replayed} invalid record(s) "
            f"{'would be' if args.dry_run else 'were'} replayed as they are: they will be "
            "rejected again unless upstream fixed them"
        )
    return "\n".join(lines)
