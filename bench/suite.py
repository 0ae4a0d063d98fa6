"""The measurements: each point runs the four contenders on the same events.

(a) naive, (b) plain aiohttp, (c) SDK only, (d) `sms-relay consumer` (real processes).
Throughput comes from a backlog (every event queued before the clock starts), as
creates per second at the simulator between its first and last create; latency from a
second run offered at half of (b)'s rate, from each record's timestamp (the offer time
for (b) and (c)) to its create at the simulator. CPU per event is the contender's own
CPU (all threads) over the throughput run; peak RSS its VmHWM.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from sqlalchemy import create_engine, text

from bench.common import (
    FROM_NUMBER,
    Create,
    ProcessWatch,
    creates,
    machine_cpu_seconds,
    order_value,
    percentile,
    progress,
    rate,
)
from sms_relay.adapters.kafka.topics import ensure_topics
from sms_relay.settings import KafkaSettings, SendingSettings, Settings, TwilioSettings
from sms_relay.simulator.control_client import SimulatorClient
from tests.support import delete_topics, fresh_kafka_settings, fresh_schema, settings_env

PUBLIC_BASE_URL = "http://127.0.0.1:8080"  # the simulator never posts callbacks here
BATCH_SIZE = 200  # the consumer's default SMS_BATCH_SIZE
CONTENDERS = ("naive", "plain", "sdk", "consumer")


@dataclass
class Context:
    bootstrap: str
    database: str  # server URL; every contender gets a fresh schema in it
    simulator: SimulatorClient
    account_sid: str
    auth_token: str
    logs: Path
    seconds: float  # how long a throughput run should last
    latency_seconds: float  # how long a latency run lasts

    def twilio(self) -> dict[str, Any]:
        return {
            "base_url": self.simulator.base_url,
            "account_sid": self.account_sid,
            "auth_token": self.auth_token,
            "from_number": FROM_NUMBER,
            "public_base_url": PUBLIC_BASE_URL,
        }


def _consent() -> str:
    return (datetime.now(UTC) - timedelta(days=30)).isoformat()


def _index(eid: str | None) -> int:
    return int(eid.rsplit("_", 1)[1]) if eid else -1


def _ours(found: list[Create], run: str, start: int, count: int) -> list[Create]:
    prefix = f"bench_{run}_"
    return [
        c
        for c in found
        if c.event_id
        and c.event_id.startswith(prefix)
        and start <= _index(c.event_id) < start + count
    ]


def child(name: str, config: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    """Run one contender process to the end; its last stdout line is its result."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.contenders", name, json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"contender {name} failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _summary(created: list[Create], count: int, spent: dict[str, float]) -> dict[str, Any]:
    """`spent`: the contender's cpu_s and peak_rss_mib; the machine's busy CPU (machine_s)
    over wall_s, when it has them (all cores: the broker, PostgreSQL and the simulator
    share them with the contender)."""
    summary = {
        "events": count,
        "events_per_s": round(rate(created), 1),
        # Without the first and last 5% of the creates: a run with retries ends with
        # the last backoffs, which a finite backlog cannot hide.
        "middle_events_per_s": round(rate(created, trim=0.05), 1),
        "cpu_ms_per_event": round(spent["cpu_s"] * 1000 / max(1, count), 3),
        "peak_rss_mib": round(spent["peak_rss_mib"], 1),
        "throttled": sum(c.outcome == "429" for c in created),
    }
    if spent.get("wall_s"):
        summary["machine_cores_busy"] = round(spent["machine_s"] / spent["wall_s"], 2)
    return summary


def _latency(latencies: list[float], offered: float) -> dict[str, Any]:
    return {
        "offered_per_s": round(offered, 1),
        "latency_events": len(latencies),
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
    }


def http_contender(
    ctx: Context,
    name: str,
    concurrency: int,
    count: int,
    half_load: float | None,
    *,
    latency: bool = True,
) -> dict[str, Any]:
    """(b) or (c): a backlog of `count` creates, then a latency run at `half_load`/s."""
    run = uuid.uuid4().hex[:8]
    base = {**ctx.twilio(), "run": run, "concurrency": concurrency}
    ctx.simulator.reset()
    measured = child(name, {**base, "start": 0, "count": count, "offered_rate": 0})
    created = _ours(creates(ctx.simulator), run, 0, count)
    result = _summary(created, count, measured)
    if not latency:
        return result
    offered = half_load or result["events_per_s"] / 2
    latency_count = max(40, int(offered * ctx.latency_seconds))
    ctx.simulator.reset()
    paced = child(name, {**base, "start": count, "count": latency_count, "offered_rate": offered})
    latencies = [
        c.at_ms - (paced["t0_ms"] + (_index(c.event_id) - count) * 1000 / offered)
        for c in _ours(creates(ctx.simulator), run, count, latency_count)
        if c.created
    ]
    return {**result, **_latency(latencies, offered)}


class Backlog:
    """Produces order-shipped events to a fresh topic: in bulk, or paced with timestamps."""

    def __init__(self, kafka: KafkaSettings, run: str) -> None:
        self._topic = kafka.topic_order_shipped
        self._run = run
        self._consent = _consent()
        self._producer = Producer(
            {
                "bootstrap.servers": kafka.bootstrap_servers,
                "acks": "all",
                "linger.ms": 1,
                "compression.type": "lz4",
                "queue.buffering.max.messages": 1_000_000,
            }
        )
        self.stamps: dict[int, float] = {}  # index -> record timestamp (ms)

    def bulk(self, start: int, count: int) -> None:
        for i in range(start, start + count):
            self._produce(i, None)
            if i % 10_000 == 0:
                self._producer.poll(0)
        if self._producer.flush(60) != 0:
            raise RuntimeError("the backlog did not reach Kafka")

    def paced(self, start: int, count: int, per_second: float) -> None:
        t0 = time.time()
        for n, i in enumerate(range(start, start + count)):
            time.sleep(max(0.0, t0 + n / per_second - time.time()))
            self._produce(i, int(time.time() * 1000))
            self._producer.poll(0)
        self._producer.flush(30)

    def _produce(self, i: int, stamp_ms: int | None) -> None:
        value = order_value(self._run, i, self._consent)
        key = str(i)
        if stamp_ms is None:
            self._producer.produce(self._topic, value=value, key=key)
        else:
            self.stamps[i] = stamp_ms
            self._producer.produce(self._topic, value=value, key=key, timestamp=stamp_ms)


class Ledger:
    """Reads progress from the contender's schema (a short query every quarter second)."""

    def __init__(self, url: str) -> None:
        self._engine = create_engine(url, pool_size=1)

    def counts(self) -> tuple[int, int]:
        """(accepted deliveries, settled and reported deliveries)."""
        query = text(
            "SELECT count(*) FILTER (WHERE state = 'accepted'), "
            "count(*) FILTER (WHERE reported) FROM deliveries"
        )
        with self._engine.connect() as connection:
            accepted, reported = connection.execute(query).one()
        return int(accepted), int(reported)

    def wait(self, target: int, what: str, timeout: float, *, reported: bool = True) -> None:
        deadline = time.monotonic() + timeout
        last = -1
        while True:
            accepted, done = self.counts()
            value = done if reported else accepted
            if value >= target:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: {value}/{target} after {timeout}s")
            if value // 5000 != last // 5000:
                progress(f"  {what}: {value}/{target}")
            last = value
            time.sleep(0.25)

    def close(self) -> None:
        self._engine.dispose()


@contextmanager
def consumer_processes(
    ctx: Context, settings: Settings, count: int, label: str, *, profile: Path | None = None
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`sms-relay consumer` as real processes (under py-spy when `profile` is given)."""
    env = {**os.environ, **settings_env(settings), "METRICS_PORT": "0"}
    env["TWILIO_FROM_NUMBER"] = FROM_NUMBER
    processes = []
    for n in range(count):
        command = [sys.executable, "-m", "cli.main", "consumer"]
        if profile is not None:
            spy = [str(Path(sys.executable).parent / "py-spy"), "record", "-f", "raw"]
            spy += ["--nolineno", "--gil", "-r", "200", "-o", str(profile), "--"]
            command = [*spy, *command]
        log = open(ctx.logs / f"{label}-{n}.log", "ab")  # noqa: SIM115 - closed below
        processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
        log.close()
    try:
        yield processes
    finally:
        # The consumer itself stops gracefully; py-spy writes its profile once it has.
        pids = python_pids(processes) if profile else [p.pid for p in processes]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for process in processes:
            process.wait(60)


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    found: list[int] = []
    for task in tasks:
        with open(f"/proc/{pid}/task/{task}/children") as children:
            found.extend(int(c) for c in children.read().split())
    return found


def python_pids(processes: list[subprocess.Popen[bytes]]) -> list[int]:
    """The consumer interpreters themselves (py-spy's child when profiling)."""
    pids = []
    for process in processes:
        kids = _children(process.pid)
        pids.append(kids[0] if kids else process.pid)
    return pids


def consumer_settings(ctx: Context, kafka: KafkaSettings, url: str, concurrency: int) -> Settings:
    return Settings(
        database_url=url,
        metrics_port=0,
        public_base_url=PUBLIC_BASE_URL,
        kafka=kafka,
        # The rate limit out of the way: Twilio's concurrency is what binds.
        sending=SendingSettings(
            messages_per_second=1_000_000, concurrency=concurrency, batch_size=BATCH_SIZE
        ),
        twilio=TwilioSettings(
            account_sid=ctx.account_sid,
            auth_token=ctx.auth_token,
            from_number=FROM_NUMBER,
            api_base_url=ctx.simulator.base_url,
        ),
    )


@contextmanager
def fresh_stack(ctx: Context) -> Iterator[tuple[KafkaSettings, str]]:
    """Fresh topics, group and schema for one contender; deleted afterwards."""
    kafka = fresh_kafka_settings(ctx.bootstrap, partitions=6)
    ensure_topics(kafka, SendingSettings().retry_tiers)
    try:
        with fresh_schema(ctx.database) as url:
            yield kafka, url
    finally:
        delete_topics(kafka)


def consumer_contender(
    ctx: Context,
    concurrency: int,
    count: int,
    half_load: float | None,
    *,
    processes: int = 1,
    label: str = "consumer",
) -> dict[str, Any]:
    """(d) `sms-relay consumer`: warm-up, a backlog of `count`, then a latency run."""
    run = uuid.uuid4().hex[:8]
    # Enough for every process to get its partitions, little at the slow points.
    warm = max(60 * processes, min(2 * BATCH_SIZE * processes, count // 4))
    with fresh_stack(ctx) as (kafka, url):
        settings = consumer_settings(ctx, kafka, url, concurrency)
        backlog, ledger = Backlog(kafka, run), Ledger(url)
        with consumer_processes(ctx, settings, processes, label) as procs:
            # Warm-up: the group joined, connections open, statements prepared.
            backlog.bulk(10_000_000, warm)
            ledger.wait(warm, "warm-up", 90)
            if processes > 1:
                time.sleep(3.0)  # let the last member's assignment settle
            ctx.simulator.reset()
            watch = ProcessWatch([p.pid for p in procs])
            with watch.running():
                cpu, machine, wall = watch.cpu(), machine_cpu_seconds(), time.monotonic()
                backlog.bulk(0, count)
                ledger.wait(warm + count, "backlog", 600)
                spent = {
                    "cpu_s": watch.cpu() - cpu,
                    "machine_s": machine_cpu_seconds() - machine,
                    "wall_s": time.monotonic() - wall,
                    "peak_rss_mib": watch.peak_rss_mib(),
                }
            created = _ours(creates(ctx.simulator), run, 0, count)
            result = _summary(created, count, spent)
            offered = half_load or result["events_per_s"] / 2
            latency_count = max(40, int(offered * ctx.latency_seconds))
            ctx.simulator.reset()
            backlog.paced(count, latency_count, offered)
            ledger.wait(warm + count + latency_count, "latency run", 120)
            latencies = [
                c.at_ms - backlog.stamps[_index(c.event_id)]
                for c in _ours(creates(ctx.simulator), run, count, latency_count)
                if c.created
            ]
        ledger.close()
    return {**result, **_latency(latencies, offered), "processes": processes}


def naive_contender(ctx: Context, latency_ms: float) -> dict[str, Any]:
    """(a) one event at a time: a backlog for a few seconds, then a latency run at half
    of its own rate (half of (b)'s would only grow its queue)."""
    run = uuid.uuid4().hex[:8]
    expected = 1000 / (latency_ms + 12)  # a send plus a few milliseconds of round trips
    count = max(20, int(expected * ctx.seconds * 0.75))
    latency_count = max(10, int(expected / 2 * ctx.latency_seconds))
    with fresh_stack(ctx) as (kafka, url):
        backlog = Backlog(kafka, run)
        backlog.bulk(0, count)
        ctx.simulator.reset()
        config = {
            **ctx.twilio(),
            "bootstrap": kafka.bootstrap_servers,
            "group": kafka.consumer_group,
            "topic": kafka.topic_order_shipped,
            "database_url": url,
            "count": count + latency_count,
        }
        command = [sys.executable, "-m", "bench.contenders", "naive", json.dumps(config)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            _wait_creates(ctx.simulator, run, 0, count, timeout=ctx.seconds * 10 + 60)
            created = _ours(creates(ctx.simulator), run, 0, count)
            offered = rate(created) / 2
            ctx.simulator.reset()
            backlog.paced(count, latency_count, offered)
            _wait_creates(ctx.simulator, run, count, latency_count, timeout=120)
            late = _ours(creates(ctx.simulator), run, count, latency_count)
            output, _ = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    measured = json.loads(output.strip().splitlines()[-1])
    result = _summary(created, count, measured)
    # Its CPU covers both runs (the process serves them one after the other).
    result["cpu_ms_per_event"] = round(measured["cpu_s"] * 1000 / (count + latency_count), 3)
    latencies = [c.at_ms - backlog.stamps[_index(c.event_id)] for c in late if c.created]
    return {**result, **_latency(latencies, offered)}


def _wait_creates(
    simulator: SimulatorClient, run: str, start: int, count: int, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while len(_ours(creates(simulator), run, start, count)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"naive: fewer than {count} creates after {timeout}s")
        time.sleep(0.5)
