"""Pruning beside the claim path: a batch claim's latency with and without pruning running.

Seeds a fresh schema with `--rows` settled deliveries past the horizon (one status step
each, by generate_series), then claims batches of 200 new events through
`PostgresLedger.claim` (the consumer's claim round trip): first alone, then while
`sms-relay prune` runs in another process and deletes every seeded row, in one run.

    .venv/bin/python -m bench.pruning --rows 1000000

PostgreSQL comes from TEST_DATABASE_URL or DATABASE_URL, or from the local stack
(`scripts/stack up --infra`). The result also goes to bench/results/pruning-latest.json;
`python -m bench --only pruning` puts it in the day's report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import NullPool, create_engine, text

from bench.common import percentile, progress
from sms_relay.adapters.postgres.deliveries import PostgresLedger
from sms_relay.adapters.postgres.engine import create_engine as create_async_engine
from sms_relay.delivery.delivery_ports import ClaimRequest
from sms_relay.masking import phone_hash
from tests.support import fresh_schema, local_stack_env

RESULTS = Path(__file__).parent / "results"
CLAIM_BATCH = 200  # the consumer's default SMS_BATCH_SIZE
PRUNE_BATCH = 1000  # the default SMS_PRUNE_BATCH_SIZE
OLD = "now() - interval '100 days'"

SEED_DELIVERIES = f"""
INSERT INTO deliveries (event_id, event_type, state, phone_hash, phone_masked, attempts,
    message_sid, settled_state, reported, lease_until, created_at, updated_at)
SELECT 'seed_' || n, 'order-shipped', 'delivered', md5(n::text), '+*******0123', 1,
    'SM' || md5(n::text), 'accepted', true, {OLD}, {OLD}, {OLD}
FROM generate_series(1, :rows) AS n
"""  # noqa: S608 (our own constant)
SEED_HISTORY = f"""
INSERT INTO status_history (event_id, message_sid, status, source, idempotency_token,
    occurred_at, recorded_at)
SELECT 'seed_' || n, 'SM' || md5(n::text), 'delivered', 'callbacks', 'seed:' || n, {OLD}, {OLD}
FROM generate_series(1, :rows) AS n
"""  # noqa: S608 (our own constant)


def seed(url: str, rows: int) -> float:
    """Seconds to insert `rows` settled deliveries and their steps, then ANALYZE."""
    started = time.monotonic()
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(text(SEED_DELIVERIES), {"rows": rows})
            connection.execute(text(SEED_HISTORY), {"rows": rows})
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("ANALYZE deliveries; ANALYZE status_history")
            )
    finally:
        engine.dispose()
    return round(time.monotonic() - started, 1)


def prune_rounds(url: str, done: threading.Event, out: dict[str, Any]) -> None:
    """`sms-relay prune` in its own process, round after round until nothing is left."""
    env = {**os.environ, "DATABASE_URL": url, "SMS_PRUNE_BATCH_SIZE": str(PRUNE_BATCH)}
    started, removed = time.monotonic(), {"deliveries": 0, "status_history": 0}
    try:
        while True:
            result = subprocess.run(
                [sys.executable, "-m", "cli.main", "prune", "--json"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            tables = json.loads(result.stdout)["tables"]
            for table in removed:
                removed[table] += tables[table]
            if tables["deliveries"] == 0:
                break
    finally:
        seconds = time.monotonic() - started
        out.update(
            seconds=round(seconds, 1),
            removed=removed,
            rows_per_s=round(sum(removed.values()) / seconds) if seconds else 0,
        )
        done.set()


async def claim_batches(
    url: str, label: str, at_least: int, until: threading.Event | None
) -> dict[str, Any]:
    """Claim batches of new events until `at_least` are done (and `until` is set)."""
    engine = create_async_engine(url, pool_size=2)
    ledger = PostgresLedger(engine, f"bench-{label}", 10.0)
    hashed = phone_hash("bench", "+12125550123")
    latencies: list[float] = []
    try:
        while len(latencies) < at_least or (until is not None and not until.is_set()):
            n = len(latencies)
            requests = [
                ClaimRequest(
                    f"{label}_{n}_{k}", "order-shipped", hashed, "+*******0123", None, None
                )
                for k in range(CLAIM_BATCH)
            ]
            started = time.perf_counter()
            await ledger.claim(requests)
            latencies.append(time.perf_counter() - started)
    finally:
        await engine.dispose()
    return {
        "batches": len(latencies),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
    }


def pruning_run(server_url: str, rows: int, baseline_batches: int = 300) -> dict[str, Any]:
    """The whole measurement on a fresh schema of `server_url`."""
    with fresh_schema(server_url) as url:
        progress(f"pruning: seeding {rows:,} settled deliveries and their steps")
        seeded = seed(url, rows)
        progress(f"pruning: seeded in {seeded} s; claims alone, {baseline_batches} batches")
        alone = asyncio.run(claim_batches(url, "alone", baseline_batches, None))
        progress(f"pruning: alone p50 {alone['p50_ms']} ms, p99 {alone['p99_ms']} ms")
        done, prune = threading.Event(), dict[str, Any]()
        pruner = threading.Thread(target=prune_rounds, args=(url, done, prune))
        pruner.start()
        beside = asyncio.run(claim_batches(url, "beside", baseline_batches, done))
        pruner.join()
        progress(
            f"pruning: beside p50 {beside['p50_ms']} ms, p99 {beside['p99_ms']} ms; "
            f"{prune['removed']} in {prune['seconds']} s"
        )
    return {
        "rows": rows,
        "seed_seconds": seeded,
        "claim_batch": CLAIM_BATCH,
        "prune_batch": PRUNE_BATCH,
        "alone": alone,
        "beside_pruning": beside,
        "prune": prune,
        "p99_ratio": round(beside["p99_ms"] / alone["p99_ms"], 2) if alone["p99_ms"] else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000, help="settled rows to seed")
    parser.add_argument("--batches", type=int, default=300, help="claim batches alone")
    args = parser.parse_args()
    server = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not server:
        server = local_stack_env()["TEST_DATABASE_URL"]
    result = pruning_run(server, args.rows, args.batches)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pruning-latest.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
