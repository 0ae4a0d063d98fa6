"""Status callbacks: `sms-relay callbacks` against (e), the least a correct handler does.

(e) checks the signature and awaits one Kafka acknowledgement (acks=all) before its
2xx; a bare aiohttp handler answering 204 is kept for reference. All are driven by
the same load generator process (`bench.contenders load`): signed forms with fresh
idempotency tokens, a fixed number in flight, a fixed time. For the real service every
2xx must mean durable: afterwards the outbox rows and the records on `delivery-status`
are counted (for (e), the records on its topic).
"""

from __future__ import annotations

import json
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
    ctx: Context,
    targets: list[str],
    processes: list[subprocess.Popen[bytes]],
    concurrency: int,
    public_base_url: str | None = None,
) -> dict[str, Any]:
    """The load generator against `targets` (its workers split evenly between them)."""
    watch = ProcessWatch([p.pid for p in processes])
    config = {
        "run": uuid.uuid4().hex[:8],
        "targets": targets,
        "public_base_url": public_base_url or targets[0],
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


def _contender(ctx: Context, name: str, concurrency: int, **config: Any) -> dict[str, Any]:
    """A contender of `bench.contenders` (bare or minimal) serving one load run."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "bench.contenders", name]
    server = subprocess.Popen([*command, json.dumps({"port": port, **config})])
    try:
        _wait_listening(f"{base}/twilio/status-callback", server)
        return _drive(ctx, [base], [server], concurrency)
    finally:
        server.terminate()
        server.wait(10)


def _minimal(ctx: Context, concurrency: int) -> dict[str, Any]:
    """(e), on a fresh topic; every 2xx must be a record on it."""
    with fresh_stack(ctx) as (kafka, _url):
        measured = _contender(
            ctx,
            "minimal",
            concurrency,
            bootstrap=kafka.bootstrap_servers,
            topic=kafka.topic_delivery_status,
            auth_token=ctx.auth_token,
        )
        measured["records_on_topic"] = _records_on(kafka, kafka.topic_delivery_status)
    return measured


def _service(ctx: Context, concurrency: int, processes: int) -> dict[str, Any]:
    """`sms-relay callbacks` as `processes` processes on ports of their own, all behind
    one PUBLIC_BASE_URL (as behind a load balancer); the load split between them."""
    with fresh_stack(ctx) as (kafka, url):
        ports = [free_port() for _ in range(processes)]
        public = f"http://127.0.0.1:{ports[0]}"
        servers = []
        try:
            for n, port in enumerate(ports):
                settings = Settings(
                    database_url=url,
                    port=port,
                    public_base_url=public,
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
                log = ctx.logs / f"callbacks-{processes}-{n}.log"
                servers.append(relay_process("callbacks", env, log))
            bases = [f"http://127.0.0.1:{port}" for port in ports]
            for base, server in zip(bases, servers, strict=True):
                _wait_listening(f"{base}/healthz", server)
            measured = _drive(ctx, bases, servers, concurrency, public)
        finally:
            for server in servers:
                server.terminate()
            for server in servers:
                server.wait(30)
        rows, published = _outbox(url)
        on_kafka = _records_on(kafka, kafka.topic_delivery_status)
    measured["processes"] = processes
    measured["durable"] = {
        "outbox_rows": rows,
        "outbox_rows_published": published,
        "records_on_delivery_status": on_kafka,
        "answered_2xx": measured["answered_2xx_all"],
    }
    return measured


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
    return round(float(a["requests_per_s"]) / max(1e-9, float(b["requests_per_s"])), 3)


def callbacks_run(ctx: Context, concurrency: int = 32) -> dict[str, Any]:
    """bare, (e), the service, (e) again, two service processes: back to back, so the
    ratios compare runs of the same minutes. (e)'s rate is the mean of its two runs."""
    progress(f"callbacks: bare aiohttp handler answering 204, {concurrency} in flight")
    floor = _contender(ctx, "bare", concurrency)
    progress(f"callbacks: (e) minimal correct handler, {concurrency} in flight")
    minimal = _minimal(ctx, concurrency)
    progress(f"callbacks: `sms-relay callbacks`, {concurrency} in flight")
    measured = _service(ctx, concurrency, 1)
    progress("callbacks: (e) again")
    again = _minimal(ctx, concurrency)
    minimal["requests_per_s_runs"] = [minimal["requests_per_s"], again["requests_per_s"]]
    minimal["requests_per_s"] = round((minimal["requests_per_s"] + again["requests_per_s"]) / 2, 1)
    progress(f"callbacks: two `sms-relay callbacks` processes, {concurrency} in flight")
    two = _service(ctx, concurrency, 2)
    return {
        "concurrency": concurrency,
        "bare": floor,
        "minimal": minimal,
        "callbacks": measured,
        "two_processes": two,
        "ratio": _ratio(measured, minimal),
        "ratio_bare": _ratio(measured, floor),
        "two_over_one": _ratio(two, measured),
        "two_over_minimal": _ratio(two, minimal),
    }
