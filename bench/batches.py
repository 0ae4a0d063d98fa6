"""`python -m bench.batches [RATE ...]`: where a record's latency goes at a given load.

One `sms-relay consumer` (concurrency 128, the simulator at 50 ms) is offered events at
each rate for five seconds; its own metrics (batches and their duration, the create
calls' duration as the consumer sees them) are read before and after, next to the
record-to-create latency at the simulator. Kafka and PostgreSQL as for `python -m bench`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from bench.common import (
    FROM_NUMBER,
    creates,
    free_port,
    percentile,
    progress,
    relay_process,
    simulator_process,
)
from bench.suite import Backlog, Context, Ledger, _index, _ours, consumer_settings, fresh_stack
from tests.support import local_stack_env, settings_env

WANTED = {
    "sms_relay_batch_duration_seconds_count": "batches",
    "sms_relay_batch_duration_seconds_sum": "batch_s",
    'sms_relay_twilio_request_duration_seconds_count{operation="create"}': "creates",
    'sms_relay_twilio_request_duration_seconds_sum{operation="create"}': "create_s",
}


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in WANTED:
            found[WANTED[name]] = float(value)
    return found


def main(rates: list[float]) -> None:
    env = local_stack_env()
    account_sid, auth_token = "AC" + uuid.uuid4().hex, uuid.uuid4().hex
    run, port = uuid.uuid4().hex[:8], free_port()
    with (
        simulator_process(account_sid, auth_token) as simulator,
        tempfile.TemporaryDirectory() as logs,
    ):
        ctx = Context(
            bootstrap=env["KAFKA_BOOTSTRAP_SERVERS"],
            database=env["TEST_DATABASE_URL"],
            simulator=simulator,
            account_sid=account_sid,
            auth_token=auth_token,
            logs=Path(logs),
            seconds=3.0,
            latency_seconds=5.0,
        )
        simulator.configure(latency_ms=50, rate_429=0.0)
        with fresh_stack(ctx) as (kafka, url):
            settings = consumer_settings(ctx, kafka, url, 128)
            child_env = {**os.environ, **settings_env(settings), "METRICS_PORT": str(port)}
            child_env["TWILIO_FROM_NUMBER"] = FROM_NUMBER
            backlog, ledger = Backlog(kafka, run), Ledger(url)
            consumer = relay_process("consumer", child_env, Path(logs) / "consumer.log")
            try:
                backlog.bulk(10_000_000, 400)
                done = 400
                ledger.wait(done, "warm-up", 90)
                for n, rate in enumerate(rates):
                    count, start = int(rate * ctx.latency_seconds), n * 1_000_000
                    simulator.reset()
                    before = scrape(port)
                    backlog.paced(start, count, rate)
                    done += count
                    ledger.wait(done, f"{rate:g}/s", 120)
                    time.sleep(0.5)  # the last batch's metrics
                    spent = {k: v - before.get(k, 0.0) for k, v in scrape(port).items()}
                    latencies = [
                        c.at_ms - backlog.stamps[_index(c.event_id)]
                        for c in _ours(creates(simulator), run, start, count)
                        if c.created
                    ]
                    batches = max(1.0, spent["batches"])
                    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
                    print(
                        f"offered {rate:g}/s: {count / batches:.1f} events per batch, a batch "
                        f"{1000 * spent['batch_s'] / batches:.0f} ms, a create as the consumer "
                        f"sees it {1000 * spent['create_s'] / max(1.0, spent['creates']):.0f} ms "
                        "(the simulator answers in 50); record to create p50 "
                        f"{p50:.0f} / p99 {p99:.0f} ms",
                        flush=True,
                    )
            finally:
                consumer.terminate()
                consumer.wait(60)
                ledger.close()
    progress("done")


if __name__ == "__main__":
    main([float(r) for r in sys.argv[1:]] or [300.0, 1100.0])
