"""`sms-relay dlq list|replay` against real Kafka, PostgreSQL and the simulator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sms_relay.adapters.kafka.headers import decode_headers
from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.ops.conftest import Cli
from tests.ops.helpers import created_to, dead_letter, query, state_of
from tests.support import (
    committed_to_end,
    eventually,
    order_event,
    produce,
    read_to_end,
    running_consumer,
    topic_reader,
)

pytestmark = pytest.mark.integration

PHONE = "+12125550142"


def replays(settings: Settings) -> list[dict[str, object]]:
    return query(settings, "SELECT * FROM dlq_replays ORDER BY id")


async def dlq_size(cli: Cli, size: int) -> bool:
    result = await cli.run_async("dlq", "list", "--json")
    return result.code == 0 and len(result.json()) == size


@pytest.mark.slow
async def test_dlq_list_shows_dead_lettered_and_rejected_records_with_filters(
    settings: Settings, simulator: SimulatorServer, cli: Cli
) -> None:
    events = [order_event(phone=PHONE, order_id="2001"), order_event(phone=PHONE, order_id="2002")]
    await dead_letter(settings, simulator, events)
    query(
        settings,
        # Both were throttled (Twilio's 20429 is kept); give one another code to filter on.
        "UPDATE deliveries SET error_code = 20003 WHERE event_id = :e",
        e=events[1]["eventId"],
    )
    produce(settings, settings.kafka.topic_order_shipped, [b'{"eventId": "poison_1", oops'])
    async with running_consumer(settings):
        await eventually(lambda: dlq_size(cli, 3), what="the rejected record")

    listed = (await cli.run_async("dlq", "list", "--json")).json()
    by_reason = {r["reason"]: r for r in listed}
    assert sorted(r["reason"] for r in listed) == [
        "invalid_json",
        "retries_exhausted",
        "retries_exhausted",
    ]
    exhausted = [r for r in listed if r["reason"] == "retries_exhausted"]
    assert {r["eventId"] for r in exhausted} == {e["eventId"] for e in events}
    assert all(r["state"] == "dead_lettered" and r["attempt"] == 3 for r in exhausted)
    assert all(
        r["topic"] == settings.kafka.dlq_topic(settings.kafka.topic_order_shipped) and r["time"]
        for r in listed
    )
    assert by_reason["invalid_json"]["eventId"] is None
    assert by_reason["invalid_json"]["error"]

    human = await cli.run_async("dlq", "list")
    assert human.code == 0
    assert events[0]["eventId"] in human.out
    assert "retries_exhausted" in human.out
    assert "3 record(s)" in human.out

    async def count(*filters: str) -> int:
        result = await cli.run_async("dlq", "list", "--json", *filters)
        assert result.code == 0, result.err
        return len(result.json())

    assert await count("--reason", "invalid_json") == 1
    assert await count("--error-code", "20429") == 1
    assert await count("--error-code", "20003") == 1
    assert await count("--limit", "2") == 2
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert await count("--since", future) == 0
    assert await count("--until", past) == 0
    assert await count("--since", past, "--until", future) == 3


def test_dlq_list_of_a_missing_topic_fails_with_one_line(
    settings: Settings, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_TOPIC_ORDER_SHIPPED", "no-such-topic-for-sms-relay")
    result = cli("dlq", "list")
    assert result.code == 2
    assert result.err.strip() == (
        "sms-relay dlq list: topic no-such-topic-for-sms-relay.dlq does not exist "
        "(run `sms-relay topics`)"
    )


@pytest.mark.slow
async def test_replay_of_a_dead_lettered_event_sends_exactly_one_sms(
    settings: Settings, simulator: SimulatorServer, cli: Cli
) -> None:
    event = order_event(phone=PHONE, order_id="3001")
    await dead_letter(settings, simulator, [event])
    assert created_to(simulator, PHONE) == []
    dlq_record = (await cli.run_async("dlq", "list", "--json")).json()[0]

    result = await cli.run_async("dlq", "replay", "--operator", "alice")
    assert result.code == 0, result.err
    assert "replayed 1 record(s)" in result.out
    assert "1 dead-lettered deliveries set back to retry_scheduled" in result.out
    assert "dlq: read 1 of 1 record(s), 1 matched" in result.err  # the progress line
    audit = replays(settings)
    assert len(audit) == 1
    assert audit[0]["event_id"] == event["eventId"]
    assert audit[0]["operator"] == "alice"
    assert audit[0]["reason"] == "retries_exhausted"
    assert (audit[0]["dlq_topic"], audit[0]["dlq_partition"], audit[0]["dlq_offset"]) == (
        settings.kafka.dlq_topic(settings.kafka.topic_order_shipped),
        dlq_record["partition"],
        dlq_record["offset"],
    )
    assert state_of(settings, event["eventId"]) == "retry_scheduled"

    with topic_reader(settings, settings.kafka.topic_order_shipped) as main_topic:
        await eventually(lambda: len(main_topic.poll()) == 2, what="the replayed record")
        replayed = decode_headers(main_topic.records[-1])
    assert replayed["sms-relay-replayed-from"] == (
        f"{settings.kafka.dlq_topic(settings.kafka.topic_order_shipped)}:{dlq_record['partition']}:{dlq_record['offset']}"
    )
    assert replayed["sms-relay-attempt"] == "0"

    async with running_consumer(settings):
        await eventually(
            lambda: state_of(settings, event["eventId"]) == "accepted", what="the replay sent"
        )
    assert len(created_to(simulator, PHONE)) == 1

    # Replaying the same DLQ record again is skipped, and with --again still sends nothing.
    again = await cli.run_async("dlq", "replay")
    assert "replayed 0 record(s)" in again.out
    assert "skipped 1 record(s) replayed before" in again.out
    assert len(replays(settings)) == 1
    forced = await cli.run_async("dlq", "replay", "--again", "--json")
    assert forced.json()["replayed"] == 1
    assert forced.json()["deliveriesReset"] == 0
    assert len(replays(settings)) == 2
    assert len(read_to_end(settings, settings.kafka.topic_order_shipped)) == 3
    async with running_consumer(settings):
        # Not only on the topic: the consumer has processed the forced replay.
        await committed_to_end(settings, settings.kafka.topic_order_shipped)
    assert len(created_to(simulator, PHONE)) == 1
    assert state_of(settings, event["eventId"]) == "accepted"


@pytest.mark.slow
async def test_replay_dry_run_changes_nothing(
    settings: Settings, simulator: SimulatorServer, cli: Cli
) -> None:
    event = order_event(phone=PHONE, order_id="4001")
    await dead_letter(settings, simulator, [event])

    result = await cli.run_async("dlq", "replay", "--dry-run")
    assert result.code == 0, result.err
    assert "dry run: would replay 1 record(s)" in result.out
    assert event["eventId"] in result.out
    assert replays(settings) == []
    assert state_of(settings, event["eventId"]) == "dead_lettered"
    # The dry run has exited: the topic holds the original record and nothing more.
    assert len(read_to_end(settings, settings.kafka.topic_order_shipped)) == 1


@pytest.mark.slow
async def test_replay_still_honours_a_suppression(
    settings: Settings, simulator: SimulatorServer, cli: Cli
) -> None:
    event = order_event(phone=PHONE, order_id="5001")
    await dead_letter(settings, simulator, [event])
    assert (await cli.run_async("suppress", "add", PHONE)).code == 0

    assert (await cli.run_async("dlq", "replay")).code == 0
    async with running_consumer(settings):
        await eventually(
            lambda: state_of(settings, event["eventId"]) == "suppressed", what="suppressed"
        )
    assert created_to(simulator, PHONE) == []


@pytest.mark.slow
async def test_invalid_records_are_replayed_only_when_asked(
    settings: Settings, simulator: SimulatorServer, cli: Cli
) -> None:
    poison = order_event(order_id="6001", phone="not-a-number")
    produce(settings, settings.kafka.topic_order_shipped, [poison])
    async with running_consumer(settings):
        await eventually(lambda: dlq_size(cli, 1), what="the rejection")

    skipped = await cli.run_async("dlq", "replay")
    assert skipped.code == 0
    assert "replayed 0 record(s)" in skipped.out
    assert "skipped 1 invalid record(s)" in skipped.out
    assert replays(settings) == []

    forced = await cli.run_async("dlq", "replay", "--include-invalid")
    assert forced.code == 0, forced.err
    assert "replayed 1 record(s)" in forced.out
    assert "will be rejected again unless upstream fixed" in forced.out
    assert [(r["event_id"], r["reason"]) for r in replays(settings)] == [
        (poison["eventId"], "schema_violation")
    ]
    async with running_consumer(settings):
        await eventually(lambda: dlq_size(cli, 2), what="rejected again")
    assert simulator.messages() == []
