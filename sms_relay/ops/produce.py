"""`sms-relay produce`: sample order-shipped events, or a file of them, for demos and load."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka.admin import AdminClient

from sms_relay.adapters.kafka.clients import create_producer
from sms_relay.adapters.kafka.producer import produce_when_room
from sms_relay.errors import OpsError
from sms_relay.ops.common import (
    KAFKA_LOGGER,
    METADATA_TIMEOUT,
    Progress,
    add_json_flag,
    emit,
    kafka_unreachable,
)
from sms_relay.settings import Settings

# Fictional numbers: the 555-0100..0199 block is reserved for fiction in real area codes.
SAMPLE_NUMBERS = tuple(f"+1212555{n:04d}" for n in range(100, 200))


def sample_events(count: int) -> list[dict[str, str]]:
    """`count` valid events with unique eventIds, consent 30 days ago."""
    run = uuid.uuid4().hex[:8]
    consent = (datetime.now(UTC) - timedelta(days=30)).isoformat(timespec="milliseconds")
    events = []
    for i in range(count):
        order = f"{1001 + i}"
        events.append(
            {
                "eventId": f"order_{order}_{run}_shipped_v1",
                "phone": SAMPLE_NUMBERS[i % len(SAMPLE_NUMBERS)],
                "orderId": order,
                "trackingUrl": f"https://example.com/track/{order}",
                "consentAt": consent.replace("+00:00", "Z"),
            }
        )
    return events


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
        "--duplicates",
        type=_count,
        default=0,
        help="with --count: send the first K events a second time (same eventId)",
    )
    parser.add_argument(
        "--rate", type=_rate, default=0.0, help="events per second (0 = as fast as possible)"
    )
    add_json_flag(parser)


def _lines(path: str) -> list[tuple[bytes, bytes | None]]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as error:
        raise OpsError(f"cannot read {path}: {error.strerror}") from None
    records = []
    for line in text.splitlines():
        if line.strip():
            records.append((line.strip().encode(), _key_of(line)))
    return records


def _key_of(line: str) -> bytes | None:
    try:
        order = json.loads(line).get("orderId")
    except (ValueError, AttributeError):
        return None
    return str(order).encode() if order is not None else None


def _records(args: argparse.Namespace) -> list[tuple[bytes, bytes | None]]:
    if args.file is not None:
        if args.duplicates:
            raise OpsError("--duplicates goes with --count, not --file")
        return _lines(args.file)
    if args.duplicates > args.count:
        raise OpsError("--duplicates cannot exceed --count")
    events = sample_events(args.count)
    events += events[: args.duplicates]
    return [(json.dumps(e).encode(), e["orderId"].encode()) for e in events]


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
    topic = settings.kafka.topic_order_shipped
    records = _records(args)
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
        {"produced": len(records), "topic": topic, "seconds": round(elapsed, 3)},
        lambda: f"produced {len(records)} events to {topic}",
    )
    return 0
