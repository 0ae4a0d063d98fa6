"""Producing records: the awaitable AsyncProducer, and the wait for room in the local queue."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from sms_relay.adapters.kafka.clients import broker_unavailable
from sms_relay.adapters.kafka.headers import KafkaHeaders
from sms_relay.errors import BrokerUnavailableError

# How long produce waits for room in librdkafka's local queue (queue.buffering.max.*)
# before it calls the broker away: room comes as the broker acknowledges records.
ROOM_DEADLINE_SECONDS = 30.0

OnDelivery = Callable[[KafkaError | None, Message], None]


def produce_when_room(
    producer: Producer,
    topic: str,
    value: bytes,
    key: bytes | str | None = None,
    headers: KafkaHeaders | None = None,
    *,
    on_delivery: OnDelivery,
    make_room: Callable[[], object] | None = None,
    deadline_seconds: float = ROOM_DEADLINE_SECONDS,
) -> None:
    """Hand one record to librdkafka; while its local queue is full (BufferError), make
    room and try again. `make_room` serves delivery reports (`producer.poll(0.1)`) unless
    another thread serves them, in which case it only waits.

    Raises BrokerUnavailableError when librdkafka refuses the record, or when the queue
    stays full past `deadline_seconds` (the broker takes nothing).
    """
    give_up: float | None = None  # read the clock only once the queue is full
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
            return
        except BufferError:
            now = time.monotonic()
            give_up = now + deadline_seconds if give_up is None else give_up
            if now > give_up:
                raise BrokerUnavailableError(
                    f"Kafka took no record for {deadline_seconds:g}s: the local queue is full"
                ) from None
            if make_room is None:
                producer.poll(0.1)
            else:
                make_room()
        except KafkaException as error:
            raise broker_unavailable(error) from error


def _wait_for_the_serving_thread() -> None:
    time.sleep(0.01)


_Report = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]", KafkaError | None]


def _settle(reports: list[_Report]) -> None:
    for _loop, done, error in reports:
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(broker_unavailable(error))


class AsyncProducer:
    """An idempotent producer whose deliveries are awaitable futures.

    A background thread serves librdkafka's delivery reports, so awaiting a record costs
    the event loop nothing; the future fails with BrokerUnavailableError if the broker
    refused it. The reports of one poll reach the event loop together (one wake-up, not
    one each).
    """

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._running = True
        self._reports: list[_Report] = []  # only touched by the thread calling poll/flush
        self._thread = threading.Thread(target=self._serve, name="kafka-producer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._running:
            self._producer.poll(0.05)
            self._hand_over()

    def _hand_over(self) -> None:
        if not self._reports:
            return
        reports, self._reports = self._reports, []
        by_loop: dict[asyncio.AbstractEventLoop, list[_Report]] = {}
        for report in reports:
            by_loop.setdefault(report[0], []).append(report)
        for loop, some in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, some)

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        headers: KafkaHeaders | None = None,
    ) -> asyncio.Future[None]:
        """Queue one record; the future settles with the broker's acknowledgement.

        Raises BrokerUnavailableError when librdkafka refuses the record or its local
        queue stays full; the future fails with it when the broker refused the record.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            self._reports.append((loop, done, error))  # called inside poll() or flush()

        # The serving thread drains the queue: only wait here, never poll from this one.
        produce_when_room(
            self._producer,
            topic,
            value,
            key,
            headers,
            on_delivery=on_delivery,
            make_room=_wait_for_the_serving_thread,
        )
        return done

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        headers: KafkaHeaders | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Produce one record and return once the broker acknowledged it (acks=all).

        Raises BrokerUnavailableError when delivery failed or took longer than `timeout`.
        """
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self.produce(topic, value, key, headers))
        except TimeoutError:
            raise BrokerUnavailableError(
                f"Kafka did not acknowledge a record within {timeout:g}s"
            ) from None

    def request_metadata(self, topic: str | None, timeout: float) -> None:
        """Ask the brokers about `topic` (None: the cluster), connecting if need be.
        Blocks: call it in a thread. Raises BrokerUnavailableError when none answers."""
        try:
            self._producer.list_topics(topic, timeout)
        except KafkaException as error:
            raise broker_unavailable(error) from error

    def close(self, timeout: float = 10.0) -> int:
        """Flush and stop; returns how many records were still undelivered.

        Raises BrokerUnavailableError when librdkafka fails the flush.
        """
        self._running = False
        self._thread.join()
        try:
            undelivered = int(self._producer.flush(timeout))
        except KafkaException as error:
            raise broker_unavailable(error) from error
        self._hand_over()
        return undelivered
