"""Throughput against Twilio's rate limit: the whole pipeline vs. bare SDK sends.

Both runs share one process, one simulator and one limit, so the ratio between them is
what our pipeline (Kafka in, PostgreSQL ledger, Kafka out, commits) costs:

    .venv/bin/python -m bench.throughput --events 1000 --mps 100 --latency-ms 100

The simulator enforces `--mps` like Twilio's queue limit (429 beyond it); the consumer
is configured to the same rate. Kafka and PostgreSQL come from KAFKA_BOOTSTRAP_SERVERS
and DATABASE_URL, or from the local stack (`scripts/stack up --infra`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text

from sms_relay.adapters.kafka import ensure_topics
from sms_relay.adapters.postgres import create_engine
from sms_relay.adapters.twilio import TwilioSmsSender, close_client, create_client
from sms_relay.ratelimit import RateLimiter
from sms_relay.settings import SendingSettings, Settings, TwilioSettings
from sms_relay.simulator.client import SimulatorClient, SimulatorError
from tests.support import (
    delete_topics,
    fresh_kafka_settings,
    fresh_schema,
    local_stack_env,
    order_event,
    produce,
    running_consumer,
)

RESULTS = Path(__file__).parent / "results"


@contextmanager
def simulator_process(
    args: argparse.Namespace, account_sid: str, auth_token: str
) -> Iterator[SimulatorClient]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "sms_relay.cli", "simulator", "--port", str(port)]
    command += ["--latency-ms", str(args.latency_ms), "--max-mps", str(args.mps)]
    command += ["--callback-delay-ms", "0"]
    env = {**os.environ, "TWILIO_ACCOUNT_SID": account_sid, "TWILIO_AUTH_TOKEN": auth_token}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    client = SimulatorClient(f"http://127.0.0.1:{port}")
    try:
        for _ in range(100):
            try:
                client.health()
                break
            except SimulatorError:
                time.sleep(0.1)
        yield client
    finally:
        process.terminate()
        process.wait(10)


def progress(label: str, done: int, total: int) -> None:
    print(f"\r{label}: {done}/{total}  ", end="", file=sys.stderr, flush=True)


async def bare_sdk(settings: Settings, count: int) -> float:
    """Baseline: the SDK sends under the same rate limit and concurrency, nothing else."""
    client = create_client(settings.twilio)
    sender = TwilioSmsSender(client, settings.twilio)
    limiter = RateLimiter(settings.sending.messages_per_second, settings.sending.burst)
    slots = asyncio.Semaphore(settings.sending.concurrency)
    done = 0

    async def one(i: int) -> None:
        nonlocal done
        async with slots:
            await limiter.acquire()
            await sender.send(f"+1212555{i % 100:04d}", f"baseline {i}", None)
        done += 1
        if done % 50 == 0:
            progress("baseline", done, count)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.perf_counter() - started
    await close_client(client)
    return elapsed


async def pipeline(settings: Settings, count: int) -> tuple[float, float]:
    """Produce `count` events, then time the consumer until every one is accepted.

    Returns (seconds from start, seconds from the first accepted event): the second
    leaves out joining the consumer group.
    """
    events = [order_event(phone=f"+1212555{i % 100:04d}", order_id=str(i)) for i in range(count)]
    produce(settings, settings.kafka.topic_order_shipped, events)
    engine = create_engine(settings.database_url.get_secret_value(), pool_size=1)
    accepted_count = text("SELECT count(*) FROM deliveries WHERE state = 'accepted'")
    started = time.perf_counter()
    first: float | None = None
    first_count = 0
    async with running_consumer(settings):
        while True:
            # Async and cheap: the consumer under test shares this event loop.
            async with engine.connect() as connection:
                accepted = int((await connection.execute(accepted_count)).scalar_one())
            progress("pipeline", accepted, count)
            if accepted and first is None:
                first, first_count = time.perf_counter(), accepted
            if accepted >= count:
                break
            await asyncio.sleep(0.2)
    ended = time.perf_counter()
    await engine.dispose()
    assert first is not None
    return ended - started, (ended - first) * count / max(1, count - first_count)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    database = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not (bootstrap and database):
        env = local_stack_env()
        bootstrap, database = env["KAFKA_BOOTSTRAP_SERVERS"], env["TEST_DATABASE_URL"]
    account_sid, auth_token = "AC" + uuid.uuid4().hex, uuid.uuid4().hex
    sending = SendingSettings(
        messages_per_second=args.mps, concurrency=args.concurrency, batch_size=args.batch_size
    )
    kafka = fresh_kafka_settings(bootstrap, partitions=6)
    ensure_topics(kafka, sending.retry_tiers)
    # Its own process, like the real Twilio: it must not compete for our interpreter.
    with (
        simulator_process(args, account_sid, auth_token) as simulator,
        fresh_schema(database) as url,
    ):
        settings = Settings(
            database_url=url,
            metrics_port=0,
            kafka=kafka,
            sending=sending,
            twilio=TwilioSettings(
                account_sid=account_sid,
                auth_token=auth_token,
                from_number="+15005550006",
                api_base_url=simulator.base_url,
            ),
        )
        baseline = await bare_sdk(settings, args.events)
        throttled_baseline = sum(m["outcome"] == "429" for m in simulator.messages())
        simulator.reset()
        measured, steady = await pipeline(settings, args.events)
        throttled = sum(m["outcome"] == "429" for m in simulator.messages())
    delete_topics(kafka)
    print(file=sys.stderr)
    return {
        "events": args.events,
        "limit_mps": args.mps,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "baseline_mps": round(args.events / baseline, 1),
        "pipeline_mps": round(args.events / measured, 1),
        "pipeline_vs_baseline": round(baseline / measured, 3),
        "pipeline_steady_vs_baseline": round(baseline / steady, 3),
        "pipeline_vs_limit": round(args.events / measured / args.mps, 3),
        "throttled_429_baseline": throttled_baseline,
        "throttled_429_pipeline": throttled,
        # Whole process (consumer, producer buffers, ledger pool) after both runs.
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--mps", type=float, default=100.0, help="Twilio's limit (and ours)")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="simulated API latency")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=200)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    result = asyncio.run(main(arguments))
    RESULTS.mkdir(exist_ok=True)
    print(json.dumps(result, indent=2))
    (RESULTS / "throughput-latest.json").write_text(json.dumps(result, indent=2) + "\n")
