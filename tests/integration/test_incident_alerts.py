"""`incident-alert` end to end on the real stack: one SMS per (number, alertKey) per
window across processes and partitions, the hourly cap, the maximum age, ValidityPeriod."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from sms_relay.adapters.kafka.topics import ensure_topics
from sms_relay.domain.collapse import HOURLY_CAP, REPEAT
from sms_relay.kinds.incident_alert import IncidentAlertPolicy
from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.ops.helpers import query
from tests.support import (
    ConsumerProcess,
    committed_to_end,
    created_bodies,
    deliveries,
    eventually,
    read_values_to_end,
    running_consumer,
    wait_for_topics,
)

pytestmark = pytest.mark.integration

ALERTS = "incident-alert"


def alert_event(phone: str, key: str, **extra: Any) -> dict[str, Any]:
    return {
        "eventId": f"alert_{uuid.uuid4().hex[:12]}",
        "phone": phone,
        "consentAt": (datetime.now(UTC) - timedelta(days=3)).isoformat(),
        "consentPurpose": "alerts",
        "alertKey": key,
        "severity": "critical",
        "summary": f"{key} is failing",
        "occurredAt": datetime.now(UTC).isoformat(),
        **extra,
    }


def serving_alerts(settings: Settings, policy: IncidentAlertPolicy | None = None) -> Settings:
    served = settings.model_copy(
        update={"sending": settings.sending.model_copy(update={"kinds": (ALERTS,)})}
    )
    if policy is not None:
        served = served.with_kind_policy(ALERTS, policy)
    wait_for_topics(
        served.kafka, ensure_topics(served.kafka, served.sending.retry_tiers, (ALERTS,))
    )
    return served


def produce_keyed(settings: Settings, values: list[dict[str, Any]], key: str | None = None) -> None:
    """Keyed by `key`, or by each eventId (spread over every partition)."""
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "acks": "all"})
    for value in values:
        producer.produce(
            settings.kafka.topic_of(ALERTS),
            value=json.dumps(value).encode(),
            key=key if key is not None else value["eventId"],
        )
    assert producer.flush(30) == 0


def assigned(log: Path) -> bool:
    """The process's log says it was given partitions."""
    lines = log.read_text().splitlines() if log.exists() else []
    return any(
        '"partitions assigned"' in line and json.loads(line).get("partitions", 0) > 0
        for line in lines
    )


def states(settings: Settings) -> Counter[str]:
    return Counter(row["state"] for row in deliveries(settings).values())


def consumer_steps(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        s["eventId"]: s
        for s in read_values_to_end(settings, settings.kafka.topic_delivery_status)
        if s["source"] == "consumer"
    }


@pytest.mark.slow
async def test_a_thousand_repeats_of_one_alert_across_two_processes_send_one_sms(
    settings: Settings, simulator: SimulatorServer, tmp_path: Path
) -> None:
    alerts = serving_alerts(settings)
    repeats = [alert_event("+12125550151", "db-primary/disk-full") for _ in range(1000)]
    with contextlib.ExitStack() as running:
        consumers = [
            running.enter_context(ConsumerProcess(alerts, str(tmp_path / f"c{i}.log")))
            for i in range(2)
        ]
        # Both members hold partitions before the records arrive, so both claim some.
        logs = [tmp_path / f"c{i}.log" for i in range(2)]
        await eventually(lambda: all(map(assigned, logs)), timeout=60, what="both assigned")
        produce_keyed(alerts, repeats)
        await eventually(lambda: states(alerts).total() == 1000, timeout=120, what="1000 settled")
        await committed_to_end(alerts, alerts.kafka.topic_of(ALERTS), timeout=60)
        codes = [c.stop() for c in consumers]

    assert codes == [0, 0]
    assert created_bodies(simulator.messages()) == [
        "Alert (critical): db-primary/disk-full is failing"
    ]
    assert states(alerts) == Counter({"accepted": 1, "collapsed": 999})
    owners = {row["lease_owner"] for row in deliveries(alerts).values()}
    assert len(owners) == 2, "both processes claimed repeats"
    steps = consumer_steps(alerts)
    collapsed = [s for s in steps.values() if s["status"] == "collapsed"]
    assert len(collapsed) == 999
    assert {(s["kind"], s["reason"]) for s in collapsed} == {(ALERTS, REPEAT)}


async def test_windows_keys_the_hourly_cap_and_age_decide_what_is_sent(
    settings: Settings, simulator: SimulatorServer
) -> None:
    policy = IncidentAlertPolicy(collapse_seconds=3, max_per_hour=3, validity_seconds=300)
    alerts = serving_alerts(settings, policy)
    first = alert_event("+12125550152", "disk")
    repeat = alert_event("+12125550152", "disk")
    other_key = alert_event("+12125550152", "cpu")
    stale = alert_event(
        "+12125550152", "mem", occurredAt=(datetime.now(UTC) - timedelta(minutes=11)).isoformat()
    )
    capped = [alert_event("+12125550153", f"key-{i}") for i in range(5)]
    produce_keyed(alerts, [first, repeat, other_key, stale], key="one-partition")
    produce_keyed(alerts, capped, key="another-partition")

    async with running_consumer(alerts) as registry:
        await eventually(lambda: states(alerts).total() == 9, timeout=30, what="9 settled")
        await committed_to_end(alerts, alerts.kafka.topic_of(ALERTS))
        rows = deliveries(alerts)
        assert rows[first["eventId"]]["state"] == "accepted"
        assert (rows[repeat["eventId"]]["state"], rows[repeat["eventId"]]["last_error"]) == (
            "collapsed",
            REPEAT,
        )
        assert rows[other_key["eventId"]]["state"] == "accepted"
        assert (rows[stale["eventId"]]["state"], rows[stale["eventId"]]["last_error"]) == (
            "expired",
            "too_late",
        )
        cap_states = [rows[e["eventId"]]["state"] for e in capped]
        assert cap_states == ["accepted"] * 3 + ["collapsed"] * 2
        assert {rows[e["eventId"]]["last_error"] for e in capped[3:]} == {HOURLY_CAP}
        assert (
            registry.get_sample_value(
                "sms_relay_collapsed_total", {"kind": ALERTS, "reason": REPEAT}
            )
            == 1
        )
        assert (
            registry.get_sample_value(
                "sms_relay_collapsed_total", {"kind": ALERTS, "reason": HOURLY_CAP}
            )
            == 2
        )

        # After the window (by the database's clock, which opened it) the key sends again.
        def window_over() -> bool:
            (row,) = query(
                alerts,
                "SELECT clock_timestamp() > opened_at + interval '3 seconds' AS over "
                "FROM alert_windows WHERE event_id = :e",
                e=first["eventId"],
            )
            return bool(row["over"])

        await eventually(window_over, timeout=10, what="the window is over")
        later = alert_event("+12125550152", "disk", summary="disk still full")
        produce_keyed(alerts, [later], key="one-partition")
        await eventually(
            lambda: deliveries(alerts).get(later["eventId"], {}).get("state") == "accepted",
            what="the key sends again",
        )

    creates = [m for m in simulator.messages() if m.get("created")]
    assert sorted(str(m["params"]["Body"]) for m in creates) == sorted(
        [
            "Alert (critical): disk is failing",
            "Alert (critical): cpu is failing",
            "Alert (critical): key-0 is failing",
            "Alert (critical): key-1 is failing",
            "Alert (critical): key-2 is failing",
            "Alert (critical): disk still full",
        ]
    )
    assert {str(m["params"]["ValidityPeriod"]) for m in creates} == {"300"}
    steps = consumer_steps(alerts)
    assert (steps[repeat["eventId"]]["status"], steps[repeat["eventId"]]["kind"]) == (
        "collapsed",
        ALERTS,
    )
    assert (steps[stale["eventId"]]["status"], steps[stale["eventId"]]["reason"]) == (
        "expired",
        "too_late",
    )
