"""`python -m bench.dlq [--sizes 20000 200000]`: peak RSS of `dlq list` and `dlq replay
--dry-run` on a DLQ of each size, in one run (part `dlq` of `python -m bench`).

Bounded memory means the peak at 200,000 records is close to the peak at 20,000. Each
size gets fresh topics and a fresh schema; the records are produced straight onto the
DLQ with the consumer's headers (seconds, not a consumer run). Each command runs as its
own process (`sms-relay dlq ...`, output to /dev/null); its peak RSS is its VmHWM,
start-up imports included. Also timed: the
command a user first tried, `dlq list --limit 5`, which now stops after one page.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

from bench.common import progress, rss_mib
from sms_relay.adapters.kafka.topics import ensure_topics
from sms_relay.settings import SendingSettings
from tests.ops.helpers import seed_dlq
from tests.support import delete_topics, fresh_kafka_settings, fresh_schema, local_stack_env

FULL_SIZES = (20_000, 200_000)
QUICK_SIZES = (2_000, 20_000)
COMMANDS = {
    "list": ["dlq", "list", "--json"],
    "replay_dry_run": ["dlq", "replay", "--dry-run", "--json"],
    "list_limit_5": ["dlq", "list", "--limit", "5"],
}


def _measured(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run `sms-relay <argv>`; its seconds and peak RSS (MiB). Raises on a failure.

    The peak is the child's VmHWM, sampled until it exits: `wait4`'s ru_maxrss would
    carry this (larger) process's own peak into the child, across fork and exec."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    peak = 0.0
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(process.stderr.read()))  # type: ignore[union-attr]
    reader.start()
    while process.poll() is None:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            peak = max(peak, rss_mib(process.pid, "VmHWM"))
        time.sleep(0.05)
    reader.join()
    seconds = time.monotonic() - started
    err = b"".join(errors).decode()
    if process.returncode != 0:
        raise RuntimeError(f"sms-relay {' '.join(argv)} failed: {err[-500:]}")
    lines = err.replace("\r", "\n").strip().splitlines()
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(peak, 1),
        "progress": lines[-1] if lines else "",
    }


def size_run(bootstrap: str, database: str, records: int) -> dict[str, Any]:
    kafka = fresh_kafka_settings(bootstrap, partitions=6)
    ensure_topics(kafka, SendingSettings().retry_tiers)
    try:
        with fresh_schema(database) as url:
            started = time.monotonic()
            seed_dlq(kafka, records, prefix="bench")
            seeded = round(time.monotonic() - started, 2)
            progress(f"dlq: {records:,} records seeded in {seeded} s")
            env = {
                **os.environ,
                "DATABASE_URL": url,
                "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "KAFKA_TOPIC_ORDER_SHIPPED": kafka.topic_order_shipped,
            }
            result: dict[str, Any] = {"records": records, "seed_seconds": seeded}
            for name, argv in COMMANDS.items():
                result[name] = _measured(argv, env)
                progress(f"dlq: {records:,} records, {name}: {result[name]}")
            return result
    finally:
        delete_topics(kafka)


def dlq_run(bootstrap: str, database: str, sizes: tuple[int, ...]) -> dict[str, Any]:
    """Every size, then the ratios of the largest to the smallest."""
    runs = [size_run(bootstrap, database, size) for size in sizes]
    small, large = runs[0], runs[-1]
    ratios = {
        name: round(large[name]["peak_rss_mib"] / small[name]["peak_rss_mib"], 3)
        for name in COMMANDS
    }
    return {"sizes": runs, "rss_largest_over_smallest": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(FULL_SIZES))
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    database = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not (bootstrap and database):
        env = local_stack_env()
        bootstrap, database = env["KAFKA_BOOTSTRAP_SERVERS"], env["TEST_DATABASE_URL"]
    print(json.dumps(dlq_run(bootstrap, database, tuple(args.sizes)), indent=1))


if __name__ == "__main__":
    main()
