"""Helpers for tests against the real services: waiting, reading topics, env for processes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import os
import shlex
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from prometheus_client import CollectorRegistry

from sms_relay.kinds.kind_settings import topic_field
from sms_relay.kinds.registry import EVENT_KINDS
from sms_relay.settings import KafkaSettings, Settings

DEFAULT_PHONE = "+12125550123"
T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
# The brokers' KIP-848 group settings of scripts/stack and docker-compose.yml: a dead
# member's partitions move after 10 s (Kafka's default: 45 s).
GROUP_BROKER_SETTINGS = {
    "group.consumer.session.timeout.ms": "10000",
    "group.consumer.min.session.timeout.ms": "6000",
    "group.consumer.heartbeat.interval.ms": "1000",
    "group.consumer.min.heartbeat.interval.ms": "500",
}


def local_stack_env() -> dict[str, str]:
    """Start Kafka and PostgreSQL from the project's own stack script (which takes a lock:
    parallel workers may all ask at once); read its env file."""
    subprocess.run([str(ROOT / "scripts" / "stack"), "up", "--infra"], check=True)
    return written_stack_env()


def written_stack_env() -> dict[str, str]:
    """The local stack's env file as its last `up` wrote it (empty when there is none),
    without starting anything: `up` on a running stack still takes seconds."""
    path = Path(os.environ.get("STACK_DIR") or ROOT / ".stack") / "env"  # scripts/stack's
    env: dict[str, str] = {}
    for line in (path.read_text() if path.exists() else "").splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = shlex.split(value)[0] if value else ""
    return env


_reserved_ports: list[socket.socket] = []


def reserved_port() -> int:
    """A loopback port that nothing on this host gets until the test ends.

    The socket is bound with SO_REUSEADDR and never listens, and it is kept: the kernel
    hands its port to no other bind(0) and no outgoing connection (where a probe that
    binds, closes and returns the number races every other process), while a server told
    this port (asyncio and `socket.create_server` set SO_REUSEADDR too) can still listen
    on it. Until one does, connections to it are refused: an address where nothing
    listens. Released by the `reserved_ports_released` fixture after each test.
    """
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    _reserved_ports.append(holder)
    return int(holder.getsockname()[1])


def release_reserved_ports() -> None:
    while _reserved_ports:
        _reserved_ports.pop().close()


async def eventually(
    predicate: Callable[[], Any],
    timeout: float = 20.0,
    interval: float = 0.1,
    what: str = "condition",
) -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy, and return
    that; fail with `what` after `timeout` seconds. Never a bare sleep in a test."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what} (last: {result!r})"
            )
        await asyncio.sleep(interval)


def eventually_sync(
    predicate: Callable[[], T | None],
    timeout: float = 20.0,
    interval: float = 0.01,
    what: str = "condition",
) -> T:
    """`eventually` for tests without an event loop. The timeout is only how long a
    failing test takes to fail: generous, as a busy host is slow."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what} (last: {result!r})"
            )
        time.sleep(interval)


@functools.cache
def migrations_script(server_url: str) -> str:
    """The SQL the migrations run, rendered once per process (Alembic's offline mode).

    Replaying it builds the same tables as running the migrations, in a fraction of the
    time (no Alembic start-up and no version checks per migration, per test);
    tests/ops/test_migrations.py checks the two agree, and its other test runs the
    migrations themselves. Without BEGIN/COMMIT: the caller's transaction holds it.
    """
    from alembic import command

    from sms_relay.migrations import alembic_config

    config = alembic_config(server_url)
    config.output_buffer = io.StringIO()
    command.upgrade(config, "head", sql=True)
    rendered: str = config.output_buffer.getvalue()
    lines = [line for line in rendered.splitlines() if line not in ("BEGIN;", "COMMIT;")]
    return "\n".join(lines)


@contextmanager
def fresh_schema(server_url: str, *, run_migrations: bool = False) -> Iterator[str]:
    """A new schema with the migrations' tables; yields a URL that uses it; drops it after.

    The tables come from `migrations_script()`, or from the migrations themselves
    (Alembic, ~0.5 s) with `run_migrations`.
    """
    from sqlalchemy import NullPool, create_engine, text

    from sms_relay.migrations import upgrade

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, poolclass=NullPool)  # survives database restarts
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in server_url else "?"
    url = f"{server_url}{separator}options=-csearch_path%3D{schema}"
    try:
        if run_migrations:
            upgrade(url)
        else:
            with admin.begin() as connection:
                connection.execute(text(f'SET LOCAL search_path TO "{schema}"'))
                connection.exec_driver_sql(migrations_script(server_url))
        yield url
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def fresh_kafka_settings(bootstrap: str, partitions: int) -> KafkaSettings:
    """New topic and group names, so runs never see each other's records."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    # Every kind's input topic (`KAFKA_TOPIC_<KIND>`), under the same prefix.
    kind_topics: dict[str, Any] = {topic_field(kind): f"{prefix}.{kind}" for kind in EVENT_KINDS}
    return KafkaSettings(
        bootstrap_servers=bootstrap,
        consumer_group=f"{prefix}-sms-relay",
        **kind_topics,
        topic_delivery_status=f"{prefix}.delivery-status",
        topic_phone_verified=f"{prefix}.phone-verified",
        partitions=partitions,
    )


def delete_topics(kafka: KafkaSettings, timeout: float = 30) -> None:
    """Delete every topic named by `kafka` (any retry tier): tests clean up after
    themselves. Errors are ignored; a topic that was never created is fine."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    prefix = kafka.topic_order_shipped.split(".", 1)[0] + "."
    names = [name for name in admin.list_topics(timeout=timeout).topics if name.startswith(prefix)]
    for future in admin.delete_topics(names, operation_timeout=timeout).values() if names else []:
        with contextlib.suppress(Exception):
            future.result()


def wait_for_topics(kafka: KafkaSettings, names: Sequence[str], timeout: float = 30) -> None:
    """Until every topic in `names` is in the broker's metadata with a leader for each
    partition: a topic made a moment ago may not be yet, and a first publish to it waits."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})

    def known(name: str) -> bool:  # one topic's metadata: a shared broker has thousands
        topic = admin.list_topics(name, timeout=timeout).topics.get(name)
        return (
            topic is not None
            and topic.error is None
            and bool(topic.partitions)
            and all(p.leader >= 0 for p in topic.partitions.values())
        )

    def ready() -> bool:
        return all(known(name) for name in names)

    eventually_sync(ready, timeout=timeout, interval=0.1)


def delete_group_configs(kafka: KafkaSettings) -> None:
    """Remove the KIP-848 configs of `kafka`'s group (they outlive the group itself)."""
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
    from confluent_kafka.admin._resource import ResourceType

    from sms_relay.adapters.kafka.clients import GROUP_CONFIGS

    entries = [
        ConfigEntry(name, "", incremental_operation=AlterConfigOpType.DELETE)
        for name in GROUP_CONFIGS
    ]
    group = ConfigResource(ResourceType.GROUP, kafka.consumer_group, incremental_configs=entries)
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers, "log_level": 0})
    admin.incremental_alter_configs([group])[group].result()


def order_event(
    event_id: str | None = None, phone: str = DEFAULT_PHONE, order_id: str = "1001", **extra: Any
) -> dict[str, Any]:
    return {
        "eventId": event_id or f"order_{uuid.uuid4().hex[:12]}_shipped_v1",
        "phone": phone,
        "orderId": order_id,
        "trackingUrl": f"https://example.com/track/{order_id}",
        "consentAt": (datetime.now(UTC) - timedelta(days=30)).isoformat(),
        **extra,
    }


def produce(
    settings: Settings,
    topic: str,
    values: Sequence[bytes | dict[str, Any]],
    headers: list[tuple[str, str | bytes | None]] | None = None,
) -> None:
    """Keyed by orderId (one order, one partition); `headers` go on every record. Returns
    once the broker acknowledged every record; fails on any refused (a record that failed
    leaves the queue too, so an empty queue alone proves nothing)."""
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "acks": "all"})
    refused: list[str] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            refused.append(str(error))

    for value in values:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        key = value.get("orderId") if isinstance(value, dict) else None
        producer.produce(topic, value=raw, key=key, headers=headers, on_delivery=delivered)
    assert producer.flush(30) == 0
    assert refused == [], f"records refused by {topic}: {refused}"


class TopicReader:
    """Reads a topic from the beginning; keeps what it has seen. Its partitions are
    assigned to it (no group to join, no rebalance to wait for) when the topic is in the
    broker's metadata; otherwise it subscribes with a group of its own."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.topic = topic
        self.records: list[Message] = []
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka.bootstrap_servers,
                "group.id": f"reader-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        metadata = self._consumer.list_topics(topic, timeout=30).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            self._consumer.subscribe([topic])
        else:
            partitions = sorted(metadata.partitions)
            self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

    def poll(self) -> list[Message]:
        for message in self._consumer.consume(500, 0.2):
            if message.error() is None:
                self.records.append(message)
        return self.records

    def values(self) -> list[dict[str, Any]]:
        return [json.loads(m.value() or b"null") for m in self.poll()]

    def close(self) -> None:
        self._consumer.close()


# What a topic created a moment ago may answer until its leader is known everywhere.
NO_LEADER_YET = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
    }
)


def _watermarks(consumer: Consumer, topic: str, timeout: float) -> dict[int, tuple[int, int]]:
    """Partition -> (low, high) water marks of `topic`, asked of the broker now."""
    from confluent_kafka import TopicPartition

    metadata = consumer.list_topics(topic, timeout=timeout).topics[topic]
    assert metadata.error is None, f"{topic}: {metadata.error}"
    marks = {}
    deadline = time.monotonic() + timeout
    for partition in sorted(metadata.partitions):
        while True:
            try:
                mark = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout)
                break
            except KafkaException as error:
                # A topic created a moment ago may have no leader known yet (retriable).
                code = error.args[0].code()
                if code not in NO_LEADER_YET or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert mark is not None, f"{topic} [{partition}]: no water marks within {timeout}s"
        marks[partition] = mark
    return marks


def _unjoined_consumer(settings: Settings) -> Consumer:
    """A consumer that never joins a group (partitions are assigned to it, if any)."""
    return Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4().hex}",  # never joined: no subscribe()
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
        }
    )


def read_to_end(settings: Settings, topic: str, timeout: float = 30) -> list[Message]:
    """Every record on `topic` up to its end offsets as of this call, in partition order.

    The partitions are assigned explicitly (no group to join, no rebalance to wait for)
    and each is read until its high water mark taken at the start; so what this returns
    is all there was at that moment, however slow the read. For "nothing more arrived",
    once the producing side provably finished.
    """
    from confluent_kafka import TopicPartition

    consumer = _unjoined_consumer(settings)
    try:
        ends: dict[int, int] = {}
        following: dict[int, int] = {}  # the next offset to read, per partition
        for number, (low, high) in _watermarks(consumer, topic, timeout).items():
            if high > low:
                ends[number], following[number] = high, low
        consumer.assign([TopicPartition(topic, p, offset) for p, offset in following.items()])
        by_partition: dict[int, list[Message]] = {p: [] for p in ends}
        deadline = time.monotonic() + timeout
        while any(following[p] < end for p, end in ends.items()):
            assert time.monotonic() < deadline, (
                f"{topic} not read to {ends} within {timeout}s (at {following})"
            )
            for message in consumer.consume(500, 0.5):
                partition, offset = message.partition(), message.offset()
                if message.error() is not None or partition is None or offset is None:
                    continue
                if offset < ends[partition]:
                    by_partition[partition].append(message)
                following[partition] = max(following[partition], offset + 1)
        return [m for p in sorted(by_partition) for m in by_partition[p]]
    finally:
        consumer.close()


def end_offsets(settings: Settings, topic: str, timeout: float = 30) -> dict[int, int]:
    """Partition -> high water mark of `topic`, as of this call."""
    consumer = _unjoined_consumer(settings)
    try:
        return {p: high for p, (_low, high) in _watermarks(consumer, topic, timeout).items()}
    finally:
        consumer.close()


async def committed_to_end(settings: Settings, topic: str, timeout: float = 30) -> None:
    """Wait until the consumer group of `settings` has committed every partition of
    `topic` up to its end offsets as of this call: every record there is processed, its
    effects durable (the consumer commits only then). A check that nothing more happened
    because of those records can follow."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    ends = {p: end for p, end in end_offsets(settings, topic).items() if end > 0}
    if not ends:
        return
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    group = settings.kafka.consumer_group
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in ends])

    def committed() -> dict[int, int]:
        answer = admin.list_consumer_group_offsets([request])[group].result(timeout)
        return {tp.partition: tp.offset for tp in answer.topic_partitions or []}

    def done() -> bool:
        return all(committed().get(p, -1) >= end for p, end in ends.items())

    await eventually(
        lambda: asyncio.to_thread(done), timeout, what=f"{group} committed {topic} to {ends}"
    )


def read_values_to_end(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """`read_to_end`, each value decoded as JSON."""
    return [json.loads(m.value() or b"null") for m in read_to_end(settings, topic)]


@contextmanager
def topic_reader(settings: Settings, topic: str) -> Iterator[TopicReader]:
    reader = TopicReader(settings, topic)
    try:
        yield reader
    finally:
        reader.close()


@asynccontextmanager
async def running_consumer(
    settings: Settings, registry: CollectorRegistry | None = None
) -> AsyncIterator[CollectorRegistry]:
    """The consumer's real `serve()` on this event loop, stopped gracefully on exit."""
    from consumer.app import serve

    registry = registry or CollectorRegistry()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop, registry))
    try:
        yield registry
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment a child process needs to run with exactly these settings."""
    twilio = settings.twilio
    sending = settings.sending
    env = {
        "APP_ENV": settings.app_env.value,
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "PUBLIC_BASE_URL": str(settings.public_base_url),
        "METRICS_PORT": str(settings.metrics_port),
        "PORT": str(settings.port),
        "REQUIRE_TWILIO_SIGNATURE": str(settings.require_twilio_signature).lower(),
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "KAFKA_CONSUMER_GROUP": settings.kafka.consumer_group,
        **{
            f"KAFKA_{topic_field(kind).upper()}": settings.kafka.topic_of(kind)
            for kind in EVENT_KINDS
        },
        "SMS_KINDS": ",".join(settings.sending.kinds),
        "KAFKA_TOPIC_DELIVERY_STATUS": settings.kafka.topic_delivery_status,
        "KAFKA_TOPIC_PHONE_VERIFIED": settings.kafka.topic_phone_verified,
        "TWILIO_ACCOUNT_SID": twilio.account_sid,
        "TWILIO_AUTH_TOKEN": twilio.auth_token.get_secret_value(),
        "TWILIO_API_BASE_URL": str(twilio.api_base_url),
        "TWILIO_VERIFY_BASE_URL": str(twilio.verify_base_url),
        "SMS_RETRY_TIERS": ",".join(sending.retry_tiers),
        "SMS_LEASE_SECONDS": str(sending.lease_seconds),
        "SMS_SETTLE_SECONDS": str(sending.settle_seconds),
        "SMS_RECONCILE_HORIZON_SECONDS": str(sending.reconcile_horizon_seconds),
        "SMS_IN_DOUBT_RESEND": sending.in_doubt_resend,
        "TWILIO_REQUEST_TIMEOUT_SECONDS": str(twilio.request_timeout_seconds),
        "SMS_MAX_ATTEMPTS": str(sending.max_attempts),
        "SMS_BACKOFF_BASE_SECONDS": str(sending.backoff_base_seconds),
        "SMS_MESSAGES_PER_SECOND": str(sending.messages_per_second),
        "SMS_CONCURRENCY": str(sending.concurrency),
        "SMS_BATCH_SIZE": str(sending.batch_size),
    }
    for name, value in (
        ("TWILIO_FROM_NUMBER", twilio.from_number),
        ("TWILIO_MESSAGING_SERVICE_SID", twilio.messaging_service_sid),
        ("TWILIO_VERIFY_SERVICE_SID", twilio.verify_service_sid),
    ):
        if value:
            env[name] = value
    return env


def deliveries(settings: Settings) -> dict[str, dict[str, Any]]:
    """The ledger as the world sees it: eventId -> row."""
    from sqlalchemy import create_engine, text

    engine = create_engine(settings.database_url.get_secret_value())
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT * FROM deliveries")).mappings().all()
    finally:
        engine.dispose()
    return {row["event_id"]: dict(row) for row in rows}


def created_bodies(messages: list[dict[str, Any]]) -> list[str]:
    """Bodies of the messages the simulator really created (one per real SMS)."""
    return [str(m["params"]["Body"]) for m in messages if m.get("created")]


class ConsumerProcess:
    """`sms-relay consumer` as a real child process with the test's settings.

    A context manager: however the test ends, the process is stopped (SIGTERM, then
    SIGKILL past the timeout), so no consumer outlives its test to disturb the next.
    """

    def __init__(self, settings: Settings, log_path: str) -> None:
        import os
        import sys

        env = {**os.environ, **settings_env(settings), "METRICS_PORT": "0"}
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop() and kill()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "consumer"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def __enter__(self) -> ConsumerProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, nothing is committed or flushed."""
        self.process.kill()
        self.process.wait(10)
        self._log.close()

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait (the graceful path); SIGKILL when it has not exited within
        `timeout`, so the code is then -9. Stopping a stopped process returns its code."""
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)  # a frozen one takes the TERM too
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(10)
        self._log.close()
        return code


class Figures:
    """What a test measured, shown however pytest runs: printed to the terminal at once
    (not captured), and kept on the test's report, which the run's summary prints under
    "figures" (a parallel worker's terminal output never reaches the caller's)."""

    def __init__(self, capsys: Any, user_properties: list[tuple[str, object]]) -> None:
        self._capsys = capsys
        self._user_properties = user_properties

    @contextmanager
    def shown(self) -> Iterator[None]:
        """Everything printed inside the block."""
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            yield
        with self._capsys.disabled():
            print(printed.getvalue(), end="")
        self._user_properties.append(("figures", printed.getvalue().strip("\n")))
