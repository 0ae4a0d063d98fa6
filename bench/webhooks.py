"""Status callbacks: `sms-relay callbacks` against a bare aiohttp handler answering 204.

Both are driven by the same load generator process (`bench.contenders load`): signed
forms with fresh idempotency tokens, a fixed number in flight, a fixed time. For the
real service every 2xx must mean durable: afterwards the outbox rows and the records on
`delivery-status` are counted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import create_engine, text

from bench.common import FROM_NUMBER, ProcessWatch, free_port, progress, relay_process
from bench.suite import Context, child, fresh_stack
from sms_relay.settings import KafkaSettings, Settings, TwilioSettings
from tests.support import settings_env


def _wait_listening(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).close()  # noqa: S310 - loopback, ours
            return
        except urllib.error.HTTPError:
            return  # it answers (405 for a GET on a POST route)
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def _drive(
    ctx: Context, target: str, process: subprocess.Popen[bytes], concurrency: int
) -> dict[str, Any]:
    watch = ProcessWatch([process.pid])
    config = {
        "run": uuid.uuid4().hex[:8],
        "target": target,
        "public_base_url": target,
        "account_sid": ctx.account_sid,
        "auth_token": ctx.auth_token,
        "from_number": FROM_NUMBER,
        "concurrency": concurrency,
        "seconds": ctx.seconds,
        "warmup_seconds": 1.0,
        "forms": int(7000 * (ctx.seconds + 1)),
    }
    cpu = watch.cpu()
    result = child("load", config)
    cpu = watch.cpu() - cpu
    answered = max(1, result["answered_2xx_all"])  # the CPU covers the warm-up too
    return {
        **{k: round(v, 1) if isinstance(v, float) else v for k, v in result.items()},
        # Warm-up included: the server's CPU over the whole load, per answered request.
        "cpu_ms_per_request": round(cpu * 1000 / answered, 3),
        "peak_rss_mib": round(watch.peak_rss_mib(), 1),
    }


def _records_on(kafka: KafkaSettings, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "bench-count"})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        total = 0
        for partition in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            total += high - low
        return total
    finally:
        consumer.close()


def _outbox(url: str) -> tuple[int, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows, published = connection.execute(
                text("SELECT count(*), count(published_at) FROM callback_outbox")
            ).one()
    finally:
        engine.dispose()
    return int(rows), int(published)


def callbacks_run(ctx: Context, concurrency: int = 32) -> dict[str, Any]:
    port = free_port()
    progress(f"callbacks: bare aiohttp handler answering 204, {concurrency} in flight")
    bare = subprocess.Popen(
        [sys.executable, "-m", "bench.contenders", "bare", f'{{"port": {port}}}']
    )
    try:
        _wait_listening(f"http://127.0.0.1:{port}/twilio/status-callback", bare)
        floor = _drive(ctx, f"http://127.0.0.1:{port}", bare, concurrency)
    finally:
        bare.terminate()
        bare.wait(10)
    progress(f"callbacks: `sms-relay callbacks`, {concurrency} in flight")
    with fresh_stack(ctx) as (kafka, url):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        settings = Settings(
            database_url=url,
            port=port,
            public_base_url=base,
            metrics_port=0,
            kafka=kafka,
            twilio=TwilioSettings(
                account_sid=ctx.account_sid,
                auth_token=ctx.auth_token,
                from_number=FROM_NUMBER,
                api_base_url=ctx.simulator.base_url,
            ),
        )
        env = {**os.environ, **settings_env(settings), "TWILIO_FROM_NUMBER": FROM_NUMBER}
        service = relay_process("callbacks", env, ctx.logs / "callbacks.log")
        try:
            _wait_listening(f"{base}/healthz", service)
            measured = _drive(ctx, base, service, concurrency)
        finally:
            service.terminate()
            service.wait(30)
        rows, published = _outbox(url)
        on_kafka = _records_on(kafka, kafka.topic_delivery_status)
    measured["durable"] = {
        "outbox_rows": rows,
        "outbox_rows_published": published,
        "records_on_delivery_status": on_kafka,
        "answered_2xx": measured["answered_2xx_all"],
    }
    return {
        "concurrency": concurrency,
        "bare": floor,
        "callbacks": measured,
        "ratio": round(measured["requests_per_s"] / max(1e-9, floor["requests_per_s"]), 3),
    }
