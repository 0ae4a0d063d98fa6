"""Decoding a polled batch: which records are due, valid, duplicated, and where to commit."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message

from consumer.records import Rejected, now_ms, parse
from schemas.events import event_id_of
from sms_relay.adapters.kafka.clients import position
from sms_relay.adapters.kafka.headers import ATTEMPT, NOT_BEFORE, decode_headers
from sms_relay.delivery.delivery_ports import Job
from sms_relay.domain.retry import delay_named_tiers
from sms_relay.kinds.event_kind import EventKind
from sms_relay.metrics import ConsumerMetrics
from sms_relay.settings import Settings

log = logging.getLogger(__name__)

Partition = tuple[str, int]
# Each subscribed topic: the kind it carries and its retry tier's index (-1: the input topic).
Route = tuple[EventKind, int]


@dataclass
class Batch:
    records: list[Message] = field(default_factory=list)  # every record fetched
    jobs: dict[str, tuple[Job, Message]] = field(default_factory=dict)  # one per eventId
    rejected: list[tuple[Message, Rejected]] = field(default_factory=list)
    positions: dict[Partition, int] = field(default_factory=dict)  # what to commit
    duplicates: int = 0  # repeats of an eventId within the batch
    oldest_ms: int = 0
    generation: int = 0  # the loop's assignment generation when it was fetched


def routes(
    kinds: Iterable[EventKind], settings: Settings, drained: Collection[str] = ()
) -> dict[str, Route]:
    """Every kind's input topic (tier -1) and retry tiers, each routed to its kind; and the
    retry topics in `drained` still named after a delay, each to the tier it continues in."""
    delays = settings.sending.tier_delays()
    found: dict[str, Route] = {}
    for kind in kinds:
        found[kind.input_topic] = (kind, -1)
        for index, topic in enumerate(settings.retry_topics(kind.input_topic)):
            found[topic] = (kind, index)
        for topic, index in delay_named_tiers(kind.input_topic, drained, delays).items():
            found[topic] = (kind, index)
    return found


def decode(
    messages: list[Message],
    routes: Mapping[str, Route],
    pause_until: Callable[[Message, int], None],
    metrics: ConsumerMetrics,
) -> Batch:
    """Sort a poll's records. A retry-tier record that is not due yet pauses its partition
    (`pause_until` seeks back to it); the records behind it come again after the resume."""
    batch = Batch(records=[m for m in messages if not _is_error(m)])
    batch.oldest_ms = min((m.timestamp()[1] for m in batch.records), default=now_ms())
    blocked: set[Partition] = set()
    for message in batch.records:
        topic, number, offset = position(message)
        partition = (topic, number)
        if partition in blocked:
            continue
        metrics.events_consumed.labels(topic).inc()
        headers = decode_headers(message)
        kind, tier_index = routes[topic]
        not_before, attempts = _int_header(headers, NOT_BEFORE), _int_header(headers, ATTEMPT)
        if not_before is None or attempts is None:
            # Never let one bad header stop the loop: it goes to the DLQ with a reason.
            batch.positions[partition] = offset + 1
            bad = NOT_BEFORE if not_before is None else ATTEMPT
            error = f"{bad}: not an integer"
            why = Rejected("invalid_header", error, event_id_of(message.value() or b""), kind)
            batch.rejected.append((message, why))
            continue
        if tier_index >= 0 and not_before > now_ms():
            pause_until(message, not_before)
            blocked.add(partition)
            continue
        batch.positions[partition] = offset + 1
        parsed = parse(kind, message)
        if isinstance(parsed, Rejected):
            batch.rejected.append((message, parsed))
        elif parsed.eventId in batch.jobs:
            batch.duplicates += 1
        else:
            batch.jobs[parsed.eventId] = (Job.of(kind, parsed, attempts, tier_index), message)
    return batch


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    """A numeric header of ours (0 when absent), or None when it is not a number."""
    value = headers.get(name, "").strip() or "0"
    return int(value) if value.isascii() and value.lstrip("-").isdigit() else None


def _is_error(message: Message) -> bool:
    error = message.error()
    if error is None:
        return False
    if error.code() != KafkaError._PARTITION_EOF:
        log.warning("consumer error", extra={"error": error.str()})
    return True
