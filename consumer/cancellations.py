"""The cancels: reads `appointment-cancelled` and records each one in the ledger.

A consumer of its own (group `<KAFKA_CONSUMER_GROUP>.cancellations`), so its records never
wait behind the reminders' batches; offsets are committed after the ledger wrote them.
An invalid record is logged, counted as rejected and skipped.
"""

from __future__ import annotations

import asyncio
import logging

from confluent_kafka import Consumer, Message, TopicPartition
from pydantic import ValidationError

from schemas.events import AppointmentCancelled
from sms_relay.adapters.kafka.clients import commit, position
from sms_relay.delivery.delivery_ports import Ledger
from sms_relay.errors import BrokerUnavailableError

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5
BATCH = 500


class CancelReader:
    def __init__(self, consumer: Consumer, ledger: Ledger, topic: str) -> None:
        self._consumer = consumer
        self._ledger = ledger
        self._topic = topic

    async def run(self, stop: asyncio.Event) -> None:
        self._consumer.subscribe([self._topic])
        loop = asyncio.get_running_loop()
        try:
            await self._read(stop, loop)
        finally:
            await loop.run_in_executor(None, self._consumer.close)

    async def _read(self, stop: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
        while not stop.is_set():
            messages = await loop.run_in_executor(None, self._poll)
            if not messages:
                continue
            cancels = [c for c in (self._parse(m) for m in messages) if c is not None]
            await self._ledger.cancel(cancels)  # raises: the records are read again
            ends: dict[tuple[str, int], int] = {}
            for message in messages:
                topic, partition, offset = position(message)
                ends[(topic, partition)] = max(ends.get((topic, partition), 0), offset + 1)
            offsets = [TopicPartition(t, p, o) for (t, p), o in ends.items()]
            try:
                await loop.run_in_executor(None, commit, self._consumer, offsets)
            except BrokerUnavailableError as error:  # read again: a cancel is idempotent
                log.warning("cancel offsets not committed", extra={"error": str(error)})

    def _poll(self) -> list[Message]:
        return [m for m in self._consumer.consume(BATCH, POLL_SECONDS) if m.error() is None]

    @staticmethod
    def _parse(message: Message) -> tuple[str, str] | None:
        try:
            cancel = AppointmentCancelled.model_validate_json(message.value() or b"")
        except ValidationError as error:
            first = error.errors()[0]
            log.warning(
                "cancel rejected",
                extra={"reason": first["type"], "error": ".".join(map(str, first["loc"]))},
            )
            return None
        return cancel.appointmentId, cancel.eventId
