"""`python -m bench.replay [COUNT]`: how fast a consumer reads back records it settled.

A replay, or the tail a new owner re-reads behind a held record after a handover, is
records the ledger already holds: each is a duplicate, and a consumer should get through
them far faster than it sends. Measured in one process, alternating: the consumer
(`serve`, the shipped defaults, 10 sends/s so 5-record batches) at the intake's old
pause threshold (two batches a partition) and at the shipped one, two rounds each.
Each round: COUNT events to numbers that are suppressed (the first pass settles them
without Twilio), then the same COUNT records again, timed until all are duplicates.
Kafka and PostgreSQL of the local stack (`make up-infra`), fresh topics and schema.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid

from prometheus_client import CollectorRegistry

import consumer.intake
from bench.common import FROM_NUMBER, phone, progress
from bench.suite import Backlog
from consumer.app import serve
from sms_relay.adapters.kafka.topics import ensure_topics
from sms_relay.adapters.postgres.deliveries import PostgresLedger
from sms_relay.adapters.postgres.engine import create_engine
from sms_relay.masking import mask_phone, phone_hash
from sms_relay.settings import SendingSettings, Settings, TwilioSettings
from tests.support import delete_topics, fresh_kafka_settings, fresh_schema, local_stack_env

SHIPPED = consumer.intake.MIN_BUFFERED_PER_PARTITION


def _count(registry: CollectorRegistry, outcome: str) -> float:
    value = registry.get_sample_value("sms_relay_outcomes_total", {"outcome": outcome})
    return value or 0.0


async def _until(registry: CollectorRegistry, outcome: str, target: int, what: str) -> None:
    deadline = time.monotonic() + 600
    while _count(registry, outcome) < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: {_count(registry, outcome):.0f}/{target} in 600 s")
        await asyncio.sleep(0.05)


async def replay_rate(count: int, min_buffered: int) -> float:
    """Duplicates per second when `count` settled records are read again."""
    consumer.intake.MIN_BUFFERED_PER_PARTITION = min_buffered
    env = local_stack_env()
    kafka = fresh_kafka_settings(env["KAFKA_BOOTSTRAP_SERVERS"], partitions=6)
    sending = SendingSettings()
    ensure_topics(kafka, sending.retry_tiers)
    try:
        with fresh_schema(env["DATABASE_URL"]) as url:
            settings = Settings(
                database_url=url,
                metrics_port=0,
                kafka=kafka,
                sending=sending,
                twilio=TwilioSettings(
                    account_sid="AC" + "0" * 32,
                    auth_token="0" * 32,
                    from_number=FROM_NUMBER,
                    api_base_url="http://127.0.0.1:9",  # never called: every number is suppressed
                ),
            )
            engine = create_engine(url)
            ledger = PostgresLedger(engine, "bench", sending.lease_seconds)
            key = settings.phone_hash_key.get_secret_value()
            for i in range(100):  # every number bench.common.phone hands out
                number = phone(i)
                await ledger.suppress(phone_hash(key, number), mask_phone(number), "bench")
            await engine.dispose()
            backlog = Backlog(kafka, uuid.uuid4().hex[:8])
            registry, stop = CollectorRegistry(), asyncio.Event()
            serving = asyncio.create_task(serve(settings, stop, registry))
            await asyncio.to_thread(backlog.bulk, 0, count)
            await _until(registry, "suppressed", count, "first pass")
            await asyncio.to_thread(backlog.bulk, 0, count)  # the same records again
            started = time.monotonic()
            await _until(registry, "duplicate", count, "replay")
            rate = count / (time.monotonic() - started)
            stop.set()
            await serving
            return rate
    finally:
        delete_topics(kafka)
        consumer.intake.MIN_BUFFERED_PER_PARTITION = SHIPPED


async def main(count: int) -> None:
    rates: dict[str, list[float]] = {"two batches": [], "shipped": []}
    for round_ in range(2):
        for name, minimum in (("two batches", 0), ("shipped", SHIPPED)):
            rates[name].append(await replay_rate(count, minimum))
            progress(f"  round {round_ + 1}, {name}: {rates[name][-1]:.0f} duplicates/s")
    old, new = statistics.median(rates["two batches"]), statistics.median(rates["shipped"])
    print(f"replay of {count} settled records, 6 partitions, default settings (median of 2):")
    print(f"  pause at two batches a partition   {old:7.0f}/s")
    print(f"  pause at {SHIPPED} records (shipped)   {new:7.0f}/s   ({new / old:.1f}x)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000))
