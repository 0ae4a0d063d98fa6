"""Retention on real PostgreSQL: each table's rule, the batches, `sms-relay prune`."""

# The seeds build SQL from this module's own constants (times relative to now()).
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from sms_relay.adapters.postgres.engine import AsyncEngine, create_engine
from sms_relay.adapters.postgres.retention_tables import prunable_tables
from sms_relay.retention.pruning import PRUNABLE_STATES, Pruner
from sms_relay.settings import Settings
from tests.ops.conftest import Cli
from tests.ops.helpers import query

pytestmark = pytest.mark.integration

OLD = "now() - interval '100 days'"
INSERT_DELIVERY = (
    "INSERT INTO deliveries (event_id, event_type, state, phone_hash, phone_masked, "
    "message_sid, created_at, updated_at, lease_until, doubt_since, settled_state, reported) "
    "VALUES (:e, 'order-shipped', :state, 'h', '+*******0123', :sid, {at}, {at}, {lease}, "
    "{doubt}, :settled, :reported)"
)


def delivery(
    settings: Settings,
    event_id: str,
    state: str,
    *,
    at: str = OLD,
    lease: str = "NULL",
    doubt: str = "NULL",
    reported: bool = True,
) -> None:
    settled = state if state in ("accepted", "failed", "suppressed", "dead_lettered") else None
    query(
        settings,
        INSERT_DELIVERY.format(at=at, lease=lease, doubt=doubt),
        e=event_id,
        state=state,
        sid=f"SM{event_id}",
        settled=settled,
        reported=reported,
    )


def step(settings: Settings, event_id: str | None, sid: str, at: str = OLD) -> None:
    query(
        settings,
        "INSERT INTO status_history (event_id, message_sid, status, source, idempotency_token, "
        f"occurred_at, recorded_at) VALUES (:e, :sid, 'sent', 'callbacks', :token, {at}, {at})",
        e=event_id,
        sid=sid,
        token=f"{event_id}:{sid}:{at}",
    )


def event_ids(settings: Settings) -> set[str]:
    return {r["event_id"] for r in query(settings, "SELECT event_id FROM deliveries")}


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.database_url.get_secret_value(), pool_size=2)
    yield engine
    await engine.dispose()


def pruner(settings: Settings, engine: AsyncEngine, now: datetime, batch: int = 1000) -> Pruner:
    tables = prunable_tables(engine, sorted(PRUNABLE_STATES))
    kept = settings.model_copy(
        update={"retention": settings.retention.model_copy(update={"prune_batch_size": batch})}
    )
    return Pruner.for_tables(kept, tables, lambda: now)


def seed_deliveries(settings: Settings) -> None:
    """One settled delivery past the horizon, and one of each kind that must stay."""
    delivery(settings, "settled_old", "delivered")
    step(settings, "settled_old", "SMsettled_old")
    step(settings, None, "SMsettled_old")  # a callback that knew only the SID
    delivery(settings, "settled_recent", "delivered", at="now()")
    step(settings, "settled_recent", "SMsettled_recent")
    delivery(settings, "in_doubt", "accepted", doubt="now() - interval '100 days'")
    delivery(settings, "leased", "accepted", lease="now() + interval '1 hour'")
    delivery(settings, "scheduled", "retry_scheduled")
    delivery(settings, "claimed", "claimed")
    delivery(settings, "sending", "sending")
    delivery(settings, "unreported", "failed", reported=False)
    step(settings, "scheduled", "SMscheduled")
    step(settings, None, "SMunknown")  # an orphan: no delivery ever had this SID


async def test_settled_deliveries_past_the_horizon_go_with_their_history(
    settings: Settings, engine: AsyncEngine
) -> None:
    seed_deliveries(settings)
    removed = await pruner(settings, engine, datetime.now(UTC)).prune()
    assert removed["deliveries"] == 1
    assert removed["status_history"] == 3  # two of the settled delivery, one orphan
    assert event_ids(settings) == {
        "settled_recent",
        "in_doubt",
        "leased",
        "scheduled",
        "claimed",
        "sending",
        "unreported",
    }
    history = query(settings, "SELECT event_id, message_sid FROM status_history ORDER BY id")
    assert [(r["event_id"], r["message_sid"]) for r in history] == [
        ("settled_recent", "SMsettled_recent"),
        ("scheduled", "SMscheduled"),
    ]


async def test_the_horizon_is_read_on_the_injected_clock_and_leases_on_the_database_clock(
    settings: Settings, engine: AsyncEngine
) -> None:
    delivery(settings, "settled_now", "delivered", at="now()")
    delivery(settings, "leased_now", "accepted", at="now()", lease="now() + interval '1 hour'")
    today = datetime.now(UTC)
    assert (await pruner(settings, engine, today).prune())["deliveries"] == 0
    later = today + timedelta(days=settings.retention.ledger_retention_days + 1)
    assert (await pruner(settings, engine, later).count())["deliveries"] == 1
    assert (await pruner(settings, engine, later).prune())["deliveries"] == 1
    assert event_ids(settings) == {"leased_now"}


async def test_batches_run_until_done_and_two_pruners_share_the_work(
    settings: Settings, engine: AsyncEngine
) -> None:
    query(
        settings,
        "INSERT INTO deliveries (event_id, event_type, state, phone_hash, phone_masked, "
        "created_at, updated_at) SELECT 'bulk_' || n, 'order-shipped', 'delivered', 'h', "
        f"'+*******0123', {OLD}, {OLD} FROM generate_series(1, 250) AS n",
    )
    now = datetime.now(UTC)
    first, second = await asyncio.gather(
        pruner(settings, engine, now, batch=20).prune(),
        pruner(settings, engine, now, batch=20).prune(),
    )
    assert first["deliveries"] + second["deliveries"] == 250
    assert event_ids(settings) == set()


def seed_other_tables(settings: Settings) -> None:
    """For each table, a row its rule lets go ('old') and one it keeps ('kept')."""
    for sql in (
        # published long ago goes; unpublished never goes however old
        "INSERT INTO callback_outbox (topic, value, content_key, created_at, published_at) "
        f"VALUES ('t', 'v', 'old', {OLD}, {OLD}), ('t', 'v', 'kept', {OLD}, NULL), "
        "('t', 'v', 'kept-recent', now(), now())",
        "INSERT INTO inbound_keywords (message_sid, phone_hash, action, received_at, applied, "
        f"created_at) VALUES ('old', 'h', 'opt_out', {OLD}, true, {OLD}), "
        "('kept', 'h', 'opt_out', now(), true, now())",
        "INSERT INTO keyword_latest (phone_hash, action, received_at, message_sid) "
        f"VALUES ('old', 'opt_out', {OLD}, 'old'), ('kept', 'opt_out', now(), 'kept')",
        "INSERT INTO ingestions (event_id, event_type, key_id, client, topic, received_at) "
        f"VALUES ('old', 'k', 'k', 'c', 't', {OLD}), ('kept', 'k', 'k', 'c', 't', now())",
        "INSERT INTO phone_verifications (phone_hash, phone_masked, verified_at) "
        "VALUES ('old', '+*******0123', now() - interval '400 days'), "
        "('kept', '+*******0123', now() - interval '100 days')",
        "INSERT INTO rate_limits (key, expires_at) "
        "VALUES ('old', now() - interval '1 second'), ('kept', now() + interval '1 hour')",
        # a window opened more than a day ago goes
        "INSERT INTO alert_windows (event_id, phone_hash, key_hash, opened_at) VALUES "
        "('old', 'h', 'k', now() - interval '25 hours'), ('kept', 'h', 'k', now() - "
        "interval '23 hours')",
        "INSERT INTO dlq_replays (event_id, dlq_topic, dlq_partition, dlq_offset, operator, "
        "replayed_at) VALUES ('old', 't', 0, 0, 'o', now() - interval '400 days'), "
        "('kept', 't', 0, 1, 'o', now() - interval '100 days')",
        "INSERT INTO dlq_replay_runs (dlq_topic, target_topic, operator, options, end_offsets, "
        "positions, updated_at) VALUES "
        "('t', 't', 'old', '{}', '{}', '{}', now() - interval '400 days'), "
        "('t', 't', 'kept', '{}', '{}', '{}', now() - interval '100 days')",
        # revoked long ago goes; live keys never go, however old; recently revoked stays
        "INSERT INTO api_keys (key_id, client, secret_hash, event_kinds, rate_limit, "
        "rate_window_seconds, created_at, revoked_at) VALUES "
        "('old', 'c', 's', '{}', 1, 1, now() - interval '900 days', now() - interval '400 days'),"
        "('kept', 'c', 's', '{}', 1, 1, now() - interval '900 days', NULL),"
        "('kept-recent', 'c', 's', '{}', 1, 1, now() - interval '900 days', now())",
        "INSERT INTO suppressions (phone_hash, phone_masked, reason, created_at) "
        "VALUES ('kept', '+*******0123', 'stop', now() - interval '9000 days')",
        "INSERT INTO erasures (operator, removed, erased_at) "
        "VALUES ('kept', '{}', now() - interval '9000 days')",
        # an orphan due long ago goes; one due recently stays
        "INSERT INTO scheduled_sends (event_id, kind, payload, phone_hash, due_at) VALUES "
        f"('old', 'k', '{{}}', 'h', {OLD}), ('kept', 'k', '{{}}', 'h', now())",
        "INSERT INTO appointment_cancellations (cancel_key, event_id, created_at) "
        f"VALUES ('old', 'e', {OLD}), ('kept', 'e', now())",
    ):
        query(settings, sql)


KEYS = {
    "callback_outbox": "content_key",
    "inbound_keywords": "message_sid",
    "keyword_latest": "phone_hash",
    "ingestions": "event_id",
    "phone_verifications": "phone_hash",
    "rate_limits": "key",
    "alert_windows": "event_id",
    "dlq_replays": "event_id",
    "dlq_replay_runs": "operator",
    "api_keys": "key_id",
    "suppressions": "phone_hash",
    "erasures": "operator",
    "scheduled_sends": "event_id",
    "appointment_cancellations": "cancel_key",
}


def test_each_table_keeps_its_rows_as_long_as_its_rule_says(settings: Settings, cli: Cli) -> None:
    seed_other_tables(settings)
    seed_deliveries(settings)
    dry = cli("prune", "--dry-run", "--json")
    assert dry.code == 0, dry.err
    would = dry.json()
    assert would["dryRun"] is True
    expected = dict.fromkeys(KEYS, 1) | {"deliveries": 1, "status_history": 1}
    del expected["suppressions"], expected["erasures"]
    assert would["tables"] == expected
    assert len(query(settings, "SELECT * FROM callback_outbox")) == 3, "a dry run deletes nothing"

    done = cli("prune")
    assert done.code == 0, done.err
    assert "removed" in done.out
    assert re.search(r"^suppressions +forever", done.out, re.MULTILINE), done.out
    for table, key in KEYS.items():
        left = sorted(r[key] for r in query(settings, f"SELECT {key} FROM {table}"))
        assert all(value.startswith("kept") for value in left), (table, left)
        assert left, f"{table}: the rows to keep went too"
    again = cli("prune", "--json")
    assert again.code == 0
    assert set(again.json()["tables"].values()) == {0}, "a second run finds nothing"
