"""`sms-relay produce` against real Kafka (and the consumer)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from schemas.events import OrderShipped
from sms_relay.ops.produce import SAMPLE_NUMBERS
from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.ops.conftest import Cli
from tests.support import (
    committed_to_end,
    eventually,
    order_event,
    read_to_end,
    running_consumer,
)

pytestmark = pytest.mark.integration


def test_sample_events_are_valid_unique_and_duplicated_on_request(
    settings: Settings, cli: Cli
) -> None:
    topic = settings.kafka.topic_order_shipped
    result = cli("produce", "--count", "5", "--duplicates", "2")
    assert result.code == 0, result.err
    assert result.out.strip() == f"produced 7 events to {topic}"
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
    assert "produced 1 events" in from_stdin.out

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
