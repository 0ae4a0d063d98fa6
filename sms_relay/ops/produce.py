"""`sms-relay produce`: sample events of any kind, or a file of them, for demos and load."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka.admin import AdminClient

from sms_relay.adapters.kafka.clients import create_producer
from sms_relay.adapters.kafka.producer import produce_when_room
from sms_relay.errors import OpsError
from sms_relay.kinds.event_kind import EventKind
from sms_relay.kinds.registry import EVENT_KINDS, unknown_kinds
from sms_relay.ops.common import (
    KAFKA_LOGGER,
    METADATA_TIMEOUT,
    Progress,
    add_json_flag,
    emit,
    kafka_unreachable,
)
from sms_relay.ops.samples import sample_events
from sms_relay.settings import Settings


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative (0 = as fast as possible)")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--count", type=_count, help="produce N sample events")
    source.add_argument(
        "--file",
        help="produce the JSON lines of PATH (- for stdin) as they are; invalid ones "
        "end on the DLQ, which is handy for demos",
    )
    parser.add_argument(
        "--kind",
        default="order-shipped",
        help="the event kind (`sms-relay kinds`): its sample events, to its topic "
        "(default: order-shipped)",
    )
    parser.add_argument(
        "--duplicates",
        type=_count,
        default=0,
        help="with --count: send the first K events a second time (same eventId)",
    )
    parser.add_argument(
        "--rate", type=_rate, default=0.0, help="events per second (0 = as fast as possible)"
    )
    add_json_flag(parser)


def _lines(path: str, key_field: str) -> list[tuple[bytes, bytes | None]]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as error:
        raise OpsError(f"cannot read {path}: {error.strerror}") from None
    records = []
    for line in text.splitlines():
        if line.strip():
            records.append((line.strip().encode(), _key_of(line, key_field)))
    return records


def _key_of(line: str, key_field: str) -> bytes | None:
    try:
        key = json.loads(line).get(key_field)
    except (ValueError, AttributeError):
        return None
    return str(key).encode() if key is not None else None


def _kind(name: str) -> EventKind:
    problem = unknown_kinds([name])
    if problem is not None:
        raise OpsError(problem)
    return EVENT_KINDS[name]


def _records(
    args: argparse.Namespace, kind: EventKind, settings: Settings
) -> list[tuple[bytes, bytes | None]]:
    if args.file is not None:
        if args.duplicates:
            raise OpsError("--duplicates goes with --count, not --file")
        return _lines(args.file, kind.key_field)
    if args.duplicates > args.count:
        raise OpsError("--duplicates cannot exceed --count")
    events = sample_events(kind, args.count, settings)
    events += events[: args.duplicates]
    return [(json.dumps(e).encode(), str(e[kind.key_field]).encode()) for e in events]


def _paced(total: int, rate: float) -> Iterator[int]:
    """0..total-1, each yielded no earlier than its slot at `rate` per second."""
    started = time.monotonic()
    for i in range(total):
        if rate > 0:
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield i


def _check_topic(settings: Settings, topic: str) -> None:
    # AdminClient metadata never auto-creates a topic (a producer's request may).
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "logger": KAFKA_LOGGER,
    }
    admin = AdminClient(config)
    try:
        topics = admin.list_topics(timeout=METADATA_TIMEOUT).topics
    except KafkaException as error:
        raise kafka_unreachable(settings.kafka.bootstrap_servers, error) from None
    if topic not in topics:
        raise OpsError(f"topic {topic} does not exist (run `sms-relay topics`)")


def handle(args: argparse.Namespace, settings: Settings) -> int:
    kind = _kind(args.kind)
    topic = settings.kafka.topic_of(kind.name)
    records = _records(args, kind, settings)
    _check_topic(settings, topic)
    # Idempotent, acks=all (the adapter's defaults): no duplicates from producer retries.
    producer = create_producer(settings.kafka, logger=KAFKA_LOGGER)
    failures: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(error)

    progress = Progress(len(records))
    started = time.monotonic()
    try:
        for i in _paced(len(records), args.rate):
            value, key = records[i]
            produce_when_room(producer, topic, value, key, on_delivery=on_delivery)
            producer.poll(0)
            progress.advance()
        remaining = producer.flush(30)
    finally:
        progress.finish()
    if remaining or failures:
        reason = failures[0].str() if failures else "flush timed out"
        raise OpsError(
            f"{remaining + len(failures)} of {len(records)} events were not acknowledged "
            f"by Kafka: {reason}"
        )
    elapsed = time.monotonic() - started
    emit(
        args,
        {"produced": len(records), "kind": kind.name, "topic": topic, "seconds": round(elapsed, 3)},
        lambda: f"produced {len(records)} {kind.name} events to {topic}",
    )
    return 0
