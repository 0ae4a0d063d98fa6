"""`sms-relay produce` against real Kafka (and the consumer)."""

from __future__ import annotations

import io
import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.events import OrderShipped
from sms_relay.adapters.kafka.topics import ensure_topics
from sms_relay.kinds.appointment_reminder import APPOINTMENT_REMINDER
from sms_relay.kinds.registry import EVENT_KINDS
from sms_relay.ops.samples import SAMPLE_NUMBERS, sample_events
from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.integration.test_kinds_flow import TICKETS, serving_both
from tests.ops.conftest import Cli
from tests.support import (
    committed_to_end,
    created_bodies,
    eventually,
    order_event,
    read_to_end,
    read_values_to_end,
    running_consumer,
    wait_for_topics,
)

pytestmark = pytest.mark.integration


def test_sample_events_are_valid_unique_and_duplicated_on_request(
    settings: Settings, cli: Cli
) -> None:
    topic = settings.kafka.topic_order_shipped
    result = cli("produce", "--count", "5", "--duplicates", "2")
    assert result.code == 0, result.err
    assert result.out.strip() == f"produced 7 order-shipped events to {topic}"
    assert "] 7/7" in result.err

    records = read_to_end(settings, topic)  # the command has exited: all it produced
    assert len(records) == 7
    events = [OrderShipped.model_validate_json(m.value() or b"") for m in records]
    assert len({e.eventId for e in events}) == 5
    assert all(e.phone in SAMPLE_NUMBERS for e in events)
    assert all(m.key() == e.orderId.encode() for m, e in zip(records, events, strict=True))


def test_a_file_of_json_lines_is_produced_as_it_is(
    settings: Settings, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [json.dumps(order_event(order_id="9001")), "", '{"eventId": "broken"', "\n"]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines))
    from_file = cli("produce", "--file", str(path), "--json")
    assert from_file.code == 0, from_file.err
    assert from_file.json()["produced"] == 2

    monkeypatch.setattr("sys.stdin", io.StringIO(lines[0] + "\n"))
    from_stdin = cli("produce", "--file", "-")
    assert from_stdin.code == 0
    assert "produced 1 order-shipped events" in from_stdin.out

    records = read_to_end(settings, settings.kafka.topic_order_shipped)
    values = sorted(m.value() or b"" for m in records)
    keys = sorted(m.key() or b"" for m in records)
    assert values == sorted([lines[0].encode(), lines[0].encode(), b'{"eventId": "broken"'])
    assert keys == [b"", b"9001", b"9001"]


def test_rate_paces_the_events(settings: Settings, cli: Cli) -> None:
    started = time.monotonic()
    assert cli("produce", "--count", "6", "--rate", "20").code == 0
    assert time.monotonic() - started >= 5 / 20


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--count", "2", "--duplicates", "3"], "--duplicates cannot exceed --count"),
        (["--file", "/nonexistent/events.jsonl"], "cannot read /nonexistent/events.jsonl"),
    ],
)
def test_bad_arguments_fail_with_one_line(
    settings: Settings, cli: Cli, argv: list[str], message: str
) -> None:
    result = cli("produce", *argv)
    assert result.code == 2
    assert result.err.startswith(f"sms-relay produce: {message}")
    assert result.err.count("\n") == 1


def test_a_missing_topic_is_not_created_by_produce(
    settings: Settings, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_TOPIC_ORDER_SHIPPED", "no-such-topic-for-sms-relay")
    result = cli("produce", "--count", "1")
    assert result.code == 2
    assert "topic no-such-topic-for-sms-relay does not exist" in result.err


async def test_produced_duplicates_become_one_sms_per_event(
    settings: Settings, simulator: SimulatorServer, cli: Cli
) -> None:
    result = await cli.run_async("produce", "--count", "4", "--duplicates", "4")
    assert result.code == 0, result.err
    async with running_consumer(settings):
        await eventually(
            lambda: len([m for m in simulator.messages() if m.get("created")]) >= 4,
            what="four messages",
        )
        # Every duplicate processed too, not only the first four records.
        await committed_to_end(settings, settings.kafka.topic_order_shipped)
    assert len([m for m in simulator.messages() if m.get("created")]) == 4


def is_instant(value: object) -> bool:
    """An ISO-8601 instant: produce moves those that have passed ahead."""
    try:
        return datetime.fromisoformat(str(value)).tzinfo is not None
    except ValueError:
        return False


def every_kinds_topic(settings: Settings) -> None:
    wait_for_topics(settings.kafka, ensure_topics(settings.kafka, (), list(EVENT_KINDS)))


@pytest.mark.parametrize("name", list(EVENT_KINDS))
def test_each_kind_is_produced_from_its_example_to_its_topic(
    settings: Settings, cli: Cli, name: str
) -> None:
    kind = EVENT_KINDS[name]
    every_kinds_topic(settings)
    result = cli("produce", "--kind", name, "--count", "3", "--json")
    assert result.code == 0, result.err
    topic = settings.kafka.topic_of(name)
    assert {k: result.json()[k] for k in ("produced", "kind", "topic")} == {
        "produced": 3,
        "kind": name,
        "topic": topic,
    }
    records = read_to_end(settings, topic)
    events = [kind.parse(m.value() or b"") for m in records]  # each one valid
    assert len({e.eventId for e in events}) == 3
    assert all(e.phone in SAMPLE_NUMBERS for e in events)
    assert all(kind.accepts_purpose(e.consentPurpose) for e in events)
    example_key = kind.example[kind.key_field]
    keys = sorted(m.key() or b"" for m in records)
    assert keys == [f"{example_key}-{i}".encode() for i in (1, 2, 3)]
    # The other fields are the example's (a link the policy refuses aside, see below).
    for event in events:
        fields = event.model_dump(mode="json", exclude_none=True)
        kept = {
            k: v
            for k, v in kind.example.items()
            if k in fields and k != kind.key_field and not is_instant(v)
        }
        assert all(str(fields[k]).rstrip("/") == str(v).rstrip("/") for k, v in kept.items()), (
            fields
        )
    # Only the chosen kind's topic: order-shipped's stays empty for the other kinds.
    if name != "order-shipped":
        assert read_to_end(settings, settings.kafka.topic_order_shipped) == []


@pytest.mark.parametrize(("hosts", "has_link"), [("", False), ("help.example.com", True)])
def test_a_ticket_link_the_settings_refuse_is_left_out_of_the_samples(
    settings: Settings,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    hosts: str,
    has_link: bool,
) -> None:
    every_kinds_topic(settings)
    monkeypatch.setenv("SMS_SUPPORT_TICKET_CREATED_LINK_HOSTS", hosts)
    assert cli("produce", "--kind", TICKETS, "--count", "1").code == 0
    (event,) = read_values_to_end(settings, settings.kafka.topic_of(TICKETS))
    assert ("link" in event) is has_link


def test_an_example_instant_that_has_passed_is_moved_weeks_ahead(settings: Settings) -> None:
    past = replace(
        APPOINTMENT_REMINDER,
        example={**APPOINTMENT_REMINDER.example, "startsAt": "2020-01-06T09:30:00+01:00"},
    )
    (event,) = sample_events(past, 1, settings)
    starts = datetime.fromisoformat(event["startsAt"])
    assert starts > datetime.now(UTC)
    assert (starts.weekday(), starts.time(), starts.utcoffset()) == (
        0,
        datetime.fromisoformat("2020-01-06T09:30:00+01:00").time(),
        datetime.fromisoformat("2020-01-06T09:30:00+01:00").utcoffset(),
    )
    assert (starts - datetime.now(UTC)).days < 7


def test_an_unknown_kind_is_one_line_naming_the_kinds(settings: Settings, cli: Cli) -> None:
    result = cli("produce", "--kind", "parcel-delivered", "--count", "1")
    assert result.code == 2
    known = ", ".join(EVENT_KINDS)
    assert result.err == f"sms-relay produce: unknown kind(s) parcel-delivered; known: {known}\n"
    assert read_to_end(settings, settings.kafka.topic_order_shipped) == []


async def test_produced_tickets_are_sent_in_the_tickets_words(
    settings: Settings, simulator: SimulatorServer, cli: Cli
) -> None:
    both = serving_both(settings)
    result = await cli.run_async("produce", "--kind", TICKETS, "--count", "2")
    assert result.code == 0, result.err
    async with running_consumer(both):
        await eventually(lambda: len(created_bodies(simulator.messages())) >= 2, what="two SMS")
        await committed_to_end(both, both.kafka.topic_of(TICKETS))
    assert sorted(created_bodies(simulator.messages())) == [
        f"We received your support request. Your ticket number is CS-482113-{i}." for i in (1, 2)
    ]
