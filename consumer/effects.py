"""What a decided record becomes on Kafka: retry-tier, DLQ and delivery-status records."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable

from confluent_kafka import Message

from consumer.records import Rejected, dlq_headers, now_ms, retry_headers, status_record
from schemas.events import Status
from sms_relay.adapters.kafka.producer import AsyncProducer
from sms_relay.delivery.delivery_ports import Result
from sms_relay.domain.outcomes import Outcome
from sms_relay.settings import KafkaSettings

log = logging.getLogger(__name__)

# One line per event for these at DEBUG (the summary counts them); the others, which an
# operator looks into one by one, at INFO.
ROUTINE = frozenset({Outcome.SENT, Outcome.DUPLICATE})
SUMMARY_SECONDS = 5.0


class Effects:
    """Produces every record a result calls for; each returns awaitables of the acks.

    Logs each settled event (at DEBUG when routine) and, at most every SUMMARY_SECONDS,
    one INFO line counting the outcomes since the last one: one JSON line per SMS was a
    measurable share of the consumer's CPU (BENCHMARKS.md).
    """

    def __init__(self, producer: AsyncProducer, kafka: KafkaSettings) -> None:
        self._producer = producer
        self._kafka = kafka
        self._settled: Counter[str] = Counter()
        self._since = 0.0  # the first event is summarized at once

    async def reject(self, message: Message, why: Rejected) -> None:
        log.warning(
            "event rejected",
            extra={"eventId": why.event_id, "reason": why.reason, "error": why.error},
        )
        kind = why.kind
        dlq = self._producer.produce(
            self._kafka.dlq_topic(kind.input_topic),
            message.value() or b"",
            message.key(),
            dlq_headers(message, kind.name, why.reason, 0, why.error),
        )
        record = status_record(
            Status.REJECTED, why.event_id, kind=kind.name, phone=None, attempt=0, reason=why.reason
        )
        status = self._producer.produce(self._kafka.topic_delivery_status, record, why.event_id)
        await asyncio.gather(dlq, status)

    def publish(self, result: Result, message: Message) -> list[Awaitable[None]]:
        event, kind = result.job.event, result.job.kind
        effects: list[Awaitable[None]] = []
        if result.outcome is Outcome.RETRY_SCHEDULED and result.retry_tier:
            # The due time travels with the record: a later change of the tier's delay
            # applies to records routed after it, never to those already waiting.
            tier = result.retry_tier
            due_ms = now_ms() + int(tier.delay_seconds * 1000)
            effects.append(
                self._producer.produce(
                    self._kafka.retry_topic(kind.input_topic, tier.position),
                    message.value() or b"",
                    message.key(),
                    retry_headers(message, kind.name, result.attempts, due_ms, result.error),
                )
            )
        if result.outcome is Outcome.DEAD_LETTERED:
            effects.append(
                self._producer.produce(
                    self._kafka.dlq_topic(kind.input_topic),
                    message.value() or b"",
                    message.key(),
                    dlq_headers(
                        message, kind.name, result.dlq_reason, result.attempts, result.error
                    ),
                )
            )
        effects.extend(self.report(result))
        level = logging.DEBUG if result.outcome in ROUTINE else logging.INFO
        if log.isEnabledFor(level):
            log.log(
                level,
                "event settled",
                extra={
                    "eventId": event.eventId,
                    "kind": kind.name,
                    "outcome": result.outcome.value,
                    "messageSid": result.message_sid,
                    "attempt": result.attempts,
                    "to": event.phone,  # masked by the log formatter
                    "errorCode": result.error_code,
                },
            )
        self._summarize(result.outcome)
        return effects

    def report(self, result: Result) -> list[Awaitable[None]]:
        """The result's delivery-status record, if it has one (the scheduler's only effect)."""
        if result.report is None:
            return []
        event = result.job.event
        record = status_record(
            result.report,
            event.eventId,
            kind=result.job.kind.name,
            phone=event.phone,
            attempt=result.attempts,
            message_sid=result.message_sid,
            error_code=result.error_code,
            reason=result.error,
            due_at=result.due_at,
        )
        return [self._producer.produce(self._kafka.topic_delivery_status, record, event.eventId)]

    def _summarize(self, outcome: Outcome) -> None:
        self._settled[outcome.value] += 1
        now = time.monotonic()
        if now - self._since >= SUMMARY_SECONDS:
            seconds = round(min(now - self._since, 1e6), 1) if self._since else None
            log.info("events settled", extra={"outcomes": dict(self._settled), "seconds": seconds})
            self._settled.clear()
            self._since = now
