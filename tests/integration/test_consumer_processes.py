"""Several consumer processes in one group, and one killed mid-batch (real services)."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path

import pytest

from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.support import (
    ConsumerProcess,
    created_bodies,
    deliveries,
    eventually,
    order_event,
    produce,
    read_to_end,
)

pytestmark = pytest.mark.integration


def accepted(settings: Settings) -> int:
    return sum(row["state"] == "accepted" for row in deliveries(settings).values())


@pytest.mark.slow
async def test_two_processes_with_duplicate_event_ids_send_once_each(
    settings: Settings, simulator: SimulatorServer, tmp_path: Path
) -> None:
    events = [order_event(order_id=f"3{i:03}") for i in range(60)]
    # Upstream duplicates and replays: every event three times, spread over partitions.
    produce(settings, settings.kafka.topic_order_shipped, events * 3)
    with contextlib.ExitStack() as running:
        consumers = [
            running.enter_context(ConsumerProcess(settings, str(tmp_path / f"c{i}.log")))
            for i in range(2)
        ]
        await eventually(lambda: accepted(settings) == 60, timeout=60, what="60 accepted")
        codes = [c.stop() for c in consumers]

    bodies = Counter(created_bodies(simulator.messages()))
    assert len(bodies) == 60
    assert set(bodies.values()) == {1}
    assert codes == [0, 0]


@pytest.mark.slow
async def test_sigkill_mid_batch_loses_nothing_and_sends_nothing_twice(
    settings: Settings, simulator: SimulatorServer, tmp_path: Path
) -> None:
    simulator.configure(latency_ms=40, rate_500_after_create=0.1)
    events = [order_event(order_id=f"4{i:03}") for i in range(150)]
    produce(settings, settings.kafka.topic_order_shipped, events)

    with ConsumerProcess(settings, str(tmp_path / "first.log")) as first:
        await eventually(
            lambda: len(created_bodies(simulator.messages())) >= 20, timeout=60, what="sends"
        )
        # No await between the count and the kill: the simulator (on this event loop)
        # answers no create in between.
        first.kill()
    killed_at = len(created_bodies(simulator.messages()))
    assert killed_at < 150, "the kill must land mid-stream"

    with ConsumerProcess(settings, str(tmp_path / "second.log")):
        await eventually(lambda: accepted(settings) == 150, timeout=90, what="150 accepted")

    bodies = Counter(created_bodies(simulator.messages()))
    assert len(bodies) == 150
    assert set(bodies.values()) == {1}, "an event was sent twice"


@pytest.mark.slow
async def test_a_joining_consumer_takes_partitions_without_reprocessing_work_in_flight(
    settings: Settings, simulator: SimulatorServer, tmp_path: Path
) -> None:
    # 20 messages/s: the stream lasts 35 seconds, so the second process joins mid-stream
    # even on a busy host (where starting it took 20 s);
    # slow answers keep a batch in flight when the first process learns of the rebalance.
    simulator.configure(latency_ms=500)
    # Small batches: the first process cannot have fetched a whole partition before the
    # second one joins.
    sending = settings.sending.model_copy(update={"messages_per_second": 20, "batch_size": 20})
    settings = settings.model_copy(update={"sending": sending})
    events = [order_event(order_id=f"5{i:03}") for i in range(700)]
    produce(settings, settings.kafka.topic_order_shipped, events)
    first_tier = settings.kafka.retry_topic(settings.kafka.topic_order_shipped, 1)

    def second_has_partitions() -> bool:
        log = (tmp_path / "second.log").read_text() if (tmp_path / "second.log").exists() else ""
        lines = [json.loads(line) for line in log.splitlines() if '"partitions assigned"' in line]
        return any(line["partitions"] > 0 for line in lines)

    with ConsumerProcess(settings, str(tmp_path / "first.log")) as first:
        await eventually(lambda: accepted(settings) >= 30, timeout=60, what="progress")
        with ConsumerProcess(settings, str(tmp_path / "second.log")) as second:
            await eventually(second_has_partitions, timeout=60, what="the second's partitions")
            await eventually(lambda: accepted(settings) == 700, timeout=90, what="700 accepted")
            codes = [first.stop(), second.stop()]
    # Revoked partitions were handed over only after their batches committed, so no
    # event was found claimed by the other process (that would route it to a tier). Both
    # processes have exited: the tier holds all it will ever hold.
    assert read_to_end(settings, first_tier) == []

    bodies = Counter(created_bodies(simulator.messages()))
    assert len(bodies) == 700
    assert set(bodies.values()) == {1}
    assert codes == [0, 0]
    owners = {row["lease_owner"] for row in deliveries(settings).values()}
    assert len(owners) == 2, "the second process took over some partitions"
    revokes = [
        json.loads(line)
        for line in (tmp_path / "first.log").read_text().splitlines()
        if '"partitions revoked"' in line
    ]
    assert any(r["batchesInFlight"] > 0 for r in revokes), "a revoke found work in flight"
