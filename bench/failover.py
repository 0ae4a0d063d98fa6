"""Failover: how long a SIGKILLed consumer's partitions wait until the other member reads them.

Two `sms-relay consumer` processes share fresh topics; every partition gets an event every
`--interval-ms`. Once each process owns its share, one is SIGKILLed. For each partition
the gap is the time from the kill to the first message sent (at the simulator) for an
event produced after the kill: for the dead process's partitions that is the failover,
for the survivor's own it is the resolution of the measurement. Each trial uses a fresh
group whose KIP-848 session timeout and heartbeat interval are set per group (the brokers'
group.consumer.min.* must allow them), so Kafka's defaults (45 s / 5 s) and tuned values
are measured in one run against one broker:

    .venv/bin/python -m bench.failover --trials 5 --groups 45000:5000,10000:1000

Kafka and PostgreSQL come from KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL, or from the
local stack (`scripts/stack up --infra`). The result also goes to
bench/results/failover-latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from sqlalchemy import NullPool, create_engine, text

from bench.common import simulator_process
from sms_relay.adapters.kafka.clients import configure_group
from sms_relay.adapters.kafka.topics import ensure_topics
from sms_relay.settings import KafkaSettings, SendingSettings, Settings, TwilioSettings
from sms_relay.simulator.control_client import SimulatorClient
from tests.support import (
    ConsumerProcess,
    delete_group_configs,
    delete_topics,
    fresh_kafka_settings,
    fresh_schema,
    local_stack_env,
    order_event,
)

RESULTS = Path(__file__).parent / "results"
# Every partition claimed by one and the same process for this long: the group has settled.
STEADY_SECONDS = 3.0
_EVENT_ID = re.compile(r"\Afo_[0-9a-f]+_([0-9]+)_([0-9]+)\Z")


class Stream:
    """One event per partition every `interval` seconds, from a thread, each remembered
    with the time it was produced. Event ids read `fo_<tag>_<partition>_<seq>`, order ids
    (which the message text carries) `<tag>-<partition>-<seq>`."""

    def __init__(self, kafka: KafkaSettings, interval: float) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.produced: dict[tuple[int, int], float] = {}
        self._kafka, self._interval = kafka, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream", daemon=True)

    def _run(self) -> None:
        producer = Producer({"bootstrap.servers": self._kafka.bootstrap_servers, "linger.ms": 0})
        seq = 0
        while not self._stop.is_set():
            for partition in range(self._kafka.partitions):
                order_id = f"{self.tag}-{partition}-{seq}"
                event = order_event(
                    event_id=f"fo_{self.tag}_{partition}_{seq}",
                    phone=f"+1212555{100 + seq % 100:04}",
                    order_id=order_id,
                )
                self.produced[(partition, seq)] = time.time()
                producer.produce(
                    self._kafka.topic_order_shipped,
                    json.dumps(event).encode(),
                    key=order_id,
                    partition=partition,
                )
            producer.poll(0)
            seq += 1
            self._stop.wait(self._interval)
        producer.flush(10)

    def first_sends_after(self, simulator: SimulatorClient, moment: float) -> dict[int, float]:
        """Partition -> when the simulator created the first message for one of its
        events produced after `moment`."""
        pattern = re.compile(rf"order {self.tag}-([0-9]+)-([0-9]+) ")
        first: dict[int, float] = {}
        for entry in simulator.messages():
            match = pattern.search(str(entry["params"].get("Body", "")))
            if not (entry.get("created") and match):
                continue
            partition, seq = int(match[1]), int(match[2])
            if self.produced.get((partition, seq), 0.0) > moment:
                created = datetime.fromisoformat(entry["time"]).timestamp()
                first[partition] = min(created, first.get(partition, created))
        return first

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def recent_owners(database_url: str, window: float) -> dict[int, set[str]]:
    """Partition -> the lease owners of its events claimed in the last `window` seconds."""
    engine = create_engine(database_url, poolclass=NullPool)
    query = text(
        "SELECT event_id, lease_owner FROM deliveries "
        "WHERE created_at > now() - make_interval(secs => :window)"
    )
    try:
        with engine.connect() as connection:
            rows = connection.execute(query, {"window": window}).all()
    finally:
        engine.dispose()
    owners: dict[int, set[str]] = {}
    for event_id, owner in rows:
        match = _EVENT_ID.match(event_id)
        if match:
            owners.setdefault(int(match[1]), set()).add(str(owner))
    return owners


def settled_assignment(settings: Settings, timeout: float = 90) -> dict[int, str]:
    """Wait until each partition is claimed by one process and both processes claim
    some; returns partition -> owner."""
    deadline = time.monotonic() + timeout
    url = settings.database_url.get_secret_value()
    while time.monotonic() < deadline:
        owners = recent_owners(url, STEADY_SECONDS)
        single = all(len(owners.get(p, ())) == 1 for p in range(settings.kafka.partitions))
        if single and len(set().union(*owners.values())) == 2:
            return {p: next(iter(names)) for p, names in owners.items()}
        time.sleep(0.5)
    raise RuntimeError(f"the group did not settle within {timeout}s")


@contextmanager
def trial_settings(
    args: argparse.Namespace, simulator: SimulatorClient, session_ms: int, heartbeat_ms: int
) -> Iterator[Settings]:
    """Fresh topics, schema and group, the group with its session timeout and heartbeat."""
    kafka = fresh_kafka_settings(args.bootstrap, partitions=args.partitions).model_copy(
        update={"group_session_timeout_ms": session_ms, "group_heartbeat_interval_ms": heartbeat_ms}
    )
    sending = SendingSettings(messages_per_second=args.mps, concurrency=50)
    ensure_topics(kafka, sending.retry_tiers)
    configure_group(kafka)
    try:
        with fresh_schema(args.database) as url:
            yield Settings(
                database_url=url,
                metrics_port=0,
                kafka=kafka,
                sending=sending,
                twilio=TwilioSettings(
                    account_sid=args.account_sid,
                    auth_token=args.auth_token,
                    from_number="+15005550006",
                    api_base_url=simulator.base_url,
                ),
            )
    finally:
        delete_group_configs(kafka)
        delete_topics(kafka)


def trial(
    args: argparse.Namespace,
    simulator: SimulatorClient,
    session_ms: int,
    heartbeat_ms: int,
    logs: Path,
) -> dict[str, Any]:
    """One kill: the gap of every partition, the dead process's and the survivor's."""
    simulator.reset()
    with (
        trial_settings(args, simulator, session_ms, heartbeat_ms) as settings,
        Stream(settings.kafka, args.interval_ms / 1000) as stream,
    ):
        consumers = [ConsumerProcess(settings, str(logs / f"{stream.tag}-{i}.log")) for i in (0, 1)]
        try:
            assignment = settled_assignment(settings)
            victim = next(c for c in consumers if f":{c.process.pid}:" in assignment[0])
            killed_at = time.time()
            victim.kill()
            deadline = time.monotonic() + session_ms / 1000 + 60
            gaps: dict[int, float] = {}
            while len(gaps) < args.partitions and time.monotonic() < deadline:
                time.sleep(0.5)
                gaps = {
                    p: t - killed_at
                    for p, t in stream.first_sends_after(simulator, killed_at).items()
                }
        finally:
            for consumer in consumers:
                consumer.stop()
    if len(gaps) < args.partitions:
        raise RuntimeError(
            f"partitions never read again: {set(range(args.partitions)) - set(gaps)}"
        )
    dead = sorted(p for p, owner in assignment.items() if owner == assignment[0])
    return {
        "failover_seconds": round(max(gaps[p] for p in dead), 2),
        "survivor_gap_seconds": round(max(gaps[p] for p in gaps if p not in dead), 2),
        "dead_partitions": dead,
    }


def summary(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 1),
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    args.bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    args.database = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not (args.bootstrap and args.database):
        env = local_stack_env()
        args.bootstrap, args.database = env["KAFKA_BOOTSTRAP_SERVERS"], env["TEST_DATABASE_URL"]
    args.account_sid, args.auth_token = "AC" + uuid.uuid4().hex, uuid.uuid4().hex
    pairs = [tuple(int(n) for n in pair.split(":")) for pair in args.groups.split(",")]
    results: dict[str, Any] = {"trials": args.trials, "partitions": args.partitions, "groups": []}
    with (
        simulator_process(args.account_sid, args.auth_token) as simulator,
        tempfile.TemporaryDirectory(prefix="failover-") as logs,
    ):
        for session_ms, heartbeat_ms in pairs:
            runs = []
            for n in range(args.trials):
                runs.append(trial(args, simulator, session_ms, heartbeat_ms, Path(logs)))
                print(
                    f"session {session_ms} ms, heartbeat {heartbeat_ms} ms, kill {n + 1}: "
                    f"{runs[-1]['failover_seconds']} s",
                    file=sys.stderr,
                )
            failovers = [r["failover_seconds"] for r in runs]
            survivor = [r["survivor_gap_seconds"] for r in runs]
            results["groups"].append(
                {
                    "session_timeout_ms": session_ms,
                    "heartbeat_interval_ms": heartbeat_ms,
                    "failover_seconds": summary(failovers),
                    "survivor_gap_seconds": summary(survivor),
                    "runs": runs,
                }
            )
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=5, help="kills per group setting")
    parser.add_argument(
        "--groups",
        default="45000:5000,10000:1000",
        help="comma-separated SESSION_MS:HEARTBEAT_MS pairs (KIP-848 group configs)",
    )
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--interval-ms", type=float, default=200, help="per partition")
    parser.add_argument("--mps", type=float, default=500, help="send rate of each consumer")
    return parser.parse_args(argv)


if __name__ == "__main__":
    result = main(parse_args())
    for group in result["groups"]:
        f, s = group["failover_seconds"], group["survivor_gap_seconds"]
        print(
            f"session {group['session_timeout_ms']} ms / heartbeat "
            f"{group['heartbeat_interval_ms']} ms: failover min {f['min']} s, median "
            f"{f['median']} s, max {f['max']} s over {result['trials']} kills "
            f"(survivor's own partitions: median {s['median']} s)"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "failover-latest.json").write_text(json.dumps(result, indent=2) + "\n")
