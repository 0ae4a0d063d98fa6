"""`sms-relay forget` on real PostgreSQL: every table, the suppression kept, the audit."""

from __future__ import annotations

from pathlib import Path

import pytest

from sms_relay.masking import phone_hash
from sms_relay.settings import Settings
from tests.ops.conftest import Cli
from tests.ops.helpers import query

pytestmark = pytest.mark.integration

PHONE = "+12125550171"
OTHER = "+12125550172"


def seed(settings: Settings, number: str, tag: str) -> str:
    """A row of `number` in every table that can hold one; returns its keyed hash."""
    hashed = phone_hash(settings.phone_hash_key.get_secret_value(), number)
    rows = [
        "INSERT INTO deliveries (event_id, event_type, state, phone_hash, phone_masked, "
        "message_sid) VALUES (:e, 'order-shipped', 'delivered', :h, '+*******01', :sid), "
        "(:e || '_doubt', 'order-shipped', 'retry_scheduled', :h, '+*******01', NULL)",
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
        "INSERT INTO suppressions (phone_hash, phone_masked, reason) VALUES (:h, '+*******01', "
        "'stop')",
    ]
    for sql in rows:
        query(settings, sql, e=f"event_{tag}", h=hashed, sid=f"SM{tag}")
    return hashed


TABLES = (
    "deliveries",
    "status_history",
    "ingestions",
    "dlq_replays",
    "inbound_keywords",
    "keyword_latest",
    "phone_verifications",
    "rate_limits",
    "suppressions",
)


def everything(settings: Settings) -> str:
    return str({table: query(settings, f"SELECT * FROM {table}") for table in TABLES})  # noqa: S608


def test_forget_removes_every_row_of_the_number_keeps_its_suppression_and_audits(
    settings: Settings, cli: Cli
) -> None:
    hashed = seed(settings, PHONE, "mine")
    other = seed(settings, OTHER, "theirs")

    result = cli("forget", PHONE, "--operator", "privacy-desk", "--json")
    assert result.code == 0, result.err
    erased = result.json()["erased"]
    assert erased == [
        {
            "to": "+*******0171",
            "removed": {
                "deliveries": 2,
                "status_history": 2,
                "ingestions": 1,
                "dlq_replays": 1,
                "inbound_keywords": 1,
                "keyword_latest": 1,
                "phone_verifications": 1,
                "rate_limits": 2,
            },
            "messageSids": ["SMmine"],
        }
    ]
    left = everything(settings)
    assert "event_mine" not in left
    assert "SMmine" not in left
    assert "event_theirs" in left, "another number's rows stay"
    assert "SMtheirs" in left
    assert [r["phone_hash"] for r in query(settings, "SELECT * FROM suppressions ORDER BY 1")] == (
        sorted([hashed, other])
    ), "a STOP outlives erasure"

    audit = query(settings, "SELECT * FROM erasures")
    assert len(audit) == 1
    assert audit[0]["operator"] == "privacy-desk"
    assert audit[0]["removed"]["deliveries"] == 2
    for trace_of_the_number in (PHONE, hashed, "0171"):
        assert trace_of_the_number not in str(audit)

    # What it cannot reach, and how an operator would: Kafka topics and Twilio's log.
    not_reached = result.json()["notReached"]
    assert settings.kafka.dlq_topic(settings.kafka.topic_order_shipped) in not_reached["kafka"]
    assert settings.kafka.topic_order_shipped in not_reached["kafka"]
    assert "kafka-delete-records" in not_reached["kafka"]
    assert "/Messages/<MessageSid>.json" in not_reached["twilio"]
    assert PHONE not in result.out

    again = cli("forget", PHONE, "--operator", "privacy-desk")
    assert again.code == 0, again.err
    assert "+*******0171: nothing found" in again.out
    assert "kafka-delete-records" in again.out
    assert PHONE not in again.out
    assert len(query(settings, "SELECT * FROM erasures")) == 2


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
    assert query(settings, "SELECT * FROM deliveries") == []
    assert len(query(settings, "SELECT * FROM suppressions")) == 2

    numbers.write_text(f"{PHONE}\n+1212555017\n")
    bad = cli("forget", "--file", str(numbers))
    assert bad.code == 2
    assert "line 2" in bad.err
    assert "+1212555017" not in bad.err
    neither = cli("forget")
    assert neither.code == 2
    assert "--file" in neither.err
