"""`sms-relay forget` on real PostgreSQL: every table, tombstones, rows in flight, the audit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sms_relay.adapters.postgres import dlq_replays
from sms_relay.adapters.postgres.deliveries import PostgresLedger
from sms_relay.adapters.postgres.engine import create_engine
from sms_relay.delivery.delivery_ports import ClaimRequest
from sms_relay.domain.outcomes import ClaimOutcome
from sms_relay.masking import mask_phone, phone_hash
from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.ops.conftest import Cli
from tests.ops.helpers import created_to, query
from tests.support import committed_to_end, eventually, order_event, produce, running_consumer

pytestmark = pytest.mark.integration

PHONE = "+12125550171"
OTHER = "+12125550172"

# Deliveries in flight, one of each kind, beside the settled one: forget leaves them whole.
IN_FLIGHT_ROWS = (
    "INSERT INTO deliveries (event_id, event_type, state, phone_hash, phone_masked, "
    "doubt_since, lease_until, settled_state) VALUES "
    "(:e || '_retry', 'order-shipped', 'retry_scheduled', :h, '+*******01', NULL, NULL, NULL), "
    "(:e || '_doubt', 'order-shipped', 'accepted', :h, '+*******01', now(), NULL, NULL), "
    "(:e || '_leased', 'order-shipped', 'delivered', :h, '+*******01', NULL, "
    "now() + interval '1 hour', NULL), "
    "(:e || '_unreported', 'order-shipped', 'accepted', :h, '+*******01', NULL, NULL, "
    "'accepted')"
)
IN_FLIGHT = 4


def seed(settings: Settings, number: str, tag: str) -> str:
    """A row of `number` in every table that can hold one, and deliveries in flight;
    returns its keyed hash."""
    hashed = phone_hash(settings.phone_hash_key.get_secret_value(), number)
    rows = [
        "INSERT INTO deliveries (event_id, event_type, state, phone_hash, phone_masked, "
        "message_sid, error_code, last_error, consent_at, consent_purpose, consent_source, "
        "sent_body_hashes, settled_state, reported, attempts) VALUES (:e, 'order-shipped', "
        "'delivered', :h, '+*******01', :sid, 30003, 'unreachable ' || :sid, now(), "
        "'shipping updates', 'checkout ' || :e, "
        "ARRAY['bodyhash' || :e], 'accepted', true, 2)",
        "INSERT INTO status_history (event_id, message_sid, status, source, idempotency_token, "
        "occurred_at) VALUES (:e, :sid, 'sent', 'callbacks', :e || '1', now()), "
        "(NULL, :sid, 'delivered', 'callbacks', :e || '2', now())",
        "INSERT INTO ingestions (event_id, event_type, key_id, client, topic) "
        "VALUES (:e, 'order-shipped', 'k', 'c', 't')",
        "INSERT INTO dlq_replays (event_id, dlq_topic, dlq_partition, dlq_offset, operator) "
        "VALUES (:e, 't', 0, 0, 'o')",
        "INSERT INTO inbound_keywords (message_sid, phone_hash, action, received_at, applied) "
        "VALUES ('SMin' || :e, :h, 'opt_out', now(), true)",
        "INSERT INTO keyword_latest (phone_hash, action, received_at, message_sid) "
        "VALUES (:h, 'opt_out', now(), 'SMin' || :e)",
        "INSERT INTO phone_verifications (phone_hash, phone_masked, verified_at) "
        "VALUES (:h, '+*******01', now())",
        "INSERT INTO rate_limits (key, expires_at) VALUES ('verify-start:number:' || :h, now()), "
        "('verify-check:number:' || :h, now())",
        "INSERT INTO alert_windows (event_id, phone_hash, key_hash, opened_at) "
        "VALUES ('alert_' || :e, :h, 'keyhash', now())",
        "INSERT INTO suppressions (phone_hash, phone_masked, reason) VALUES (:h, '+*******01', "
        "'stop')",
    ]
    rows.append(IN_FLIGHT_ROWS)
    for sql in rows:
        query(settings, sql, e=f"event_{tag}", h=hashed, sid=f"SM{tag}")
    return hashed


def settle_in_flight(settings: Settings, tag: str) -> None:
    query(
        settings,
        "UPDATE deliveries SET state = 'delivered', doubt_since = NULL, lease_until = NULL, "
        "reported = true WHERE event_id LIKE :e",
        e=f"event_{tag}_%",
    )


TABLES = (
    "deliveries",
    "status_history",
    "ingestions",
    "dlq_replays",
    "inbound_keywords",
    "keyword_latest",
    "phone_verifications",
    "rate_limits",
    "alert_windows",
    "suppressions",
)


def everything(settings: Settings, *tables: str) -> str:
    return str({table: query(settings, f"SELECT * FROM {table}") for table in tables})  # noqa: S608


def delivery(settings: Settings, event_id: str) -> dict[str, Any]:
    return query(settings, "SELECT * FROM deliveries WHERE event_id = :e", e=event_id)[0]


def test_forget_erases_every_row_of_the_number_keeps_rows_in_flight_and_audits(
    settings: Settings, cli: Cli
) -> None:
    hashed = seed(settings, PHONE, "mine")
    other = seed(settings, OTHER, "theirs")
    in_flight_before = query(
        settings, "SELECT * FROM deliveries WHERE event_id LIKE 'event_mine_%' ORDER BY 1"
    )

    result = cli("forget", PHONE, "--operator", "privacy-desk", "--json")
    assert result.code == 0, result.err
    erased = result.json()["erased"]
    assert erased == [
        {
            "to": "+*******0171",
            "removed": {
                "deliveries": 1,
                "scheduled_sends": 0,
                "status_history": 2,
                "ingestions": 1,
                "dlq_replays": 1,
                "inbound_keywords": 1,
                "keyword_latest": 1,
                "phone_verifications": 1,
                "rate_limits": 2,
                "alert_windows": 1,
            },
            "messageSids": ["SMmine"],
            "inFlight": IN_FLIGHT,
        }
    ]
    assert "forget again" in result.json()["inFlightStep"]
    assert "sms-relay suppress add" in result.json()["inFlightStep"]

    # The settled delivery is a tombstone: it still dedupes, and holds nothing of the person.
    tombstone = delivery(settings, "event_mine")
    assert tombstone["state"] == "delivered"
    assert (tombstone["settled_state"], tombstone["reported"]) == ("accepted", True)
    assert tombstone["attempts"] == 2
    assert tombstone["event_type"] == "order-shipped"
    assert (tombstone["phone_hash"], tombstone["phone_masked"]) == ("erased", "erased")
    assert tombstone["message_sid"] is None
    assert tombstone["last_error"] is None
    consent = (tombstone["consent_at"], tombstone["consent_purpose"], tombstone["consent_source"])
    assert consent == (None, None, None)
    assert tombstone["sent_body_hashes"] == []
    for trace_of_the_number in (PHONE, hashed, "+*******01", "0171", "SMmine", "bodyhash"):
        assert trace_of_the_number not in str(tombstone)
    # The deliveries in flight are left whole, with their number.
    assert (
        query(settings, "SELECT * FROM deliveries WHERE event_id LIKE 'event_mine_%' ORDER BY 1")
        == in_flight_before
    )

    left = everything(settings, *TABLES[1:])
    assert "event_mine" not in left
    assert "SMmine" not in left
    assert "event_theirs" in left, "another number's rows stay"
    assert "SMtheirs" in left
    assert delivery(settings, "event_theirs")["phone_hash"] == other
    assert [r["phone_hash"] for r in query(settings, "SELECT * FROM suppressions ORDER BY 1")] == (
        sorted([hashed, other])
    ), "a STOP outlives erasure"

    audit = query(settings, "SELECT * FROM erasures")
    assert len(audit) == 1
    assert audit[0]["operator"] == "privacy-desk"
    assert audit[0]["removed"]["deliveries"] == 1
    assert audit[0]["removed"]["deliveries_in_flight_kept"] == IN_FLIGHT
    for trace_of_the_number in (PHONE, hashed, "0171"):
        assert trace_of_the_number not in str(audit)

    # What it cannot reach, and how an operator would: Kafka topics and Twilio's log.
    not_reached = result.json()["notReached"]
    assert settings.kafka.dlq_topic(settings.kafka.topic_order_shipped) in not_reached["kafka"]
    assert settings.kafka.topic_order_shipped in not_reached["kafka"]
    assert "kafka-delete-records" in not_reached["kafka"]
    assert "/Messages/<MessageSid>.json" in not_reached["twilio"]
    assert PHONE not in result.out

    # Again while they are in flight: the tombstone is not found again, the rest is kept.
    again = cli("forget", PHONE, "--operator", "privacy-desk")
    assert again.code == 0, again.err
    assert "+*******0171: nothing erased yet" in again.out
    assert f"{IN_FLIGHT} delivery(ies) in flight, kept" in again.out
    assert "forget again" in again.out
    assert "kafka-delete-records" in again.out
    assert PHONE not in again.out

    # Once they have settled, a run erases them; the next finds nothing.
    settle_in_flight(settings, "mine")
    settled = cli("forget", PHONE, "--json")
    assert settled.json()["erased"][0]["removed"]["deliveries"] == IN_FLIGHT
    assert settled.json()["erased"][0]["inFlight"] == 0
    assert settled.json()["inFlightStep"] is None
    assert query(settings, "SELECT * FROM deliveries WHERE phone_hash = :h", h=hashed) == []
    last = cli("forget", PHONE)
    assert "+*******0171: nothing found" in last.out
    assert "in flight" not in last.out
    audit = query(settings, "SELECT * FROM erasures ORDER BY id")
    assert [a["removed"]["deliveries_in_flight_kept"] for a in audit] == [4, 4, 0, 0]


def test_pruning_takes_a_tombstone_at_the_horizon(settings: Settings, cli: Cli) -> None:
    seed(settings, PHONE, "mine")
    assert cli("forget", PHONE).code == 0
    query(
        settings,
        "UPDATE deliveries SET created_at = now() - interval '400 days', "
        "updated_at = now() - interval '400 days' WHERE event_id LIKE 'event_mine%'",
    )
    pruned = cli("prune", "--json")
    assert pruned.code == 0, pruned.err
    assert pruned.json()["tables"]["deliveries"] == 1
    assert query(settings, "SELECT * FROM deliveries WHERE event_id = 'event_mine'") == []
    assert len(query(settings, "SELECT * FROM deliveries")) == IN_FLIGHT, "in flight stay"


async def test_a_tombstone_is_never_claimed_whatever_its_state(
    settings: Settings, cli: Cli
) -> None:
    seed(settings, PHONE, "mine")
    assert (await cli.run_async("forget", PHONE)).code == 0
    engine = create_engine(settings.database_url.get_secret_value())
    try:
        # A DLQ replay leaves a dead-lettered tombstone as it is.
        query(
            settings, "UPDATE deliveries SET state = 'dead_lettered' WHERE event_id = 'event_mine'"
        )
        replay = dlq_replays.Replay("event_mine", "t", 0, 1, "retries_exhausted", "o")
        assert await dlq_replays.replay(engine, [replay], lambda: None) == 0
        assert delivery(settings, "event_mine")["state"] == "dead_lettered"

        # Even a tombstone in a state a claim would resume is a duplicate, and stays unleased.
        query(
            settings,
            "UPDATE deliveries SET state = 'retry_scheduled', lease_until = now() "
            "WHERE event_id = 'event_mine'",
        )
        ledger = PostgresLedger(engine, "test-owner", lease_seconds=30)
        request = ClaimRequest(
            "event_mine",
            "order-shipped",
            phone_hash(settings.phone_hash_key.get_secret_value(), PHONE),
            mask_phone(PHONE),
            None,
            None,
        )
        claim = (await ledger.claim([request]))["event_mine"]
        assert claim.outcome is ClaimOutcome.DUPLICATE
        assert claim.lease_token is None
        row = delivery(settings, "event_mine")
        assert row["lease_owner"] is None
        assert row["phone_hash"] == "erased"
    finally:
        await engine.dispose()


@pytest.mark.slow
async def test_a_replayed_event_of_an_erased_number_is_not_sent_again(
    settings: Settings, simulator: SimulatorServer, cli: Cli
) -> None:
    event = order_event(phone=PHONE, order_id="4001")
    produce(settings, settings.kafka.topic_order_shipped, [event])
    async with running_consumer(settings):
        await eventually(
            lambda: (
                query(
                    settings,
                    "SELECT 1 FROM deliveries WHERE event_id = :e AND reported",
                    e=event["eventId"],
                )
                != []
            ),
            what="the event sent and its status reported",
        )
    assert len(created_to(simulator, PHONE)) == 1

    result = await cli.run_async("forget", PHONE, "--json")
    assert result.code == 0, result.err
    assert result.json()["erased"][0]["removed"]["deliveries"] == 1
    assert result.json()["erased"][0]["inFlight"] == 0

    # The event is still on the topic: a reset offset or an upstream resend brings it back.
    produce(settings, settings.kafka.topic_order_shipped, [event])
    async with running_consumer(settings):
        await committed_to_end(settings, settings.kafka.topic_order_shipped)
    assert len(created_to(simulator, PHONE)) == 1, "the erased number got a second SMS"
    tombstone = delivery(settings, event["eventId"])
    assert (tombstone["phone_hash"], tombstone["message_sid"]) == ("erased", None)


def test_forget_takes_a_file_and_refuses_a_bad_line_without_echoing_it(
    settings: Settings, cli: Cli, tmp_path: Path
) -> None:
    seed(settings, PHONE, "mine")
    seed(settings, OTHER, "theirs")
    numbers = tmp_path / "numbers.txt"
    numbers.write_text(f"# erasure requests\n{PHONE}\n\n{OTHER}\n")
    result = cli("forget", "--file", str(numbers), "--json")
    assert result.code == 0, result.err
    assert [e["to"] for e in result.json()["erased"]] == ["+*******0171", "+*******0172"]
    assert [e["inFlight"] for e in result.json()["erased"]] == [IN_FLIGHT] * 2
    settled = query(
        settings, "SELECT * FROM deliveries WHERE event_id IN ('event_mine', 'event_theirs')"
    )
    assert [(r["phone_hash"], r["message_sid"]) for r in settled] == [("erased", None)] * 2
    assert len(query(settings, "SELECT * FROM suppressions")) == 2

    numbers.write_text(f"{PHONE}\n+1212555017\n")
    bad = cli("forget", "--file", str(numbers))
    assert bad.code == 2
    assert "line 2" in bad.err
    assert "+1212555017" not in bad.err
    neither = cli("forget")
    assert neither.code == 2
    assert "--file" in neither.err
