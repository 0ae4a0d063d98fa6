"""`sms-relay suppress add|remove|list` against real PostgreSQL (and the consumer)."""

from __future__ import annotations

import pytest

from sms_relay.masking import phone_hash
from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.ops.conftest import Cli
from tests.ops.helpers import created_to, query, state_of
from tests.support import eventually, order_event, produce, running_consumer

pytestmark = pytest.mark.integration

PHONE = "+12125550161"
MASKED = "+*******0161"


def rows(settings: Settings) -> list[dict[str, object]]:
    return query(settings, "SELECT * FROM suppressions ORDER BY phone_masked")


def test_add_list_remove_keep_only_a_keyed_hash_and_a_masked_number(
    settings: Settings, cli: Cli
) -> None:
    added = cli("suppress", "add", PHONE)
    assert added.code == 0, added.err
    assert added.out.strip() == f"suppressed {MASKED} (reason manual)"
    stored = rows(settings)
    assert [(r["phone_hash"], r["phone_masked"], r["reason"]) for r in stored] == [
        (phone_hash(settings.phone_hash_key.get_secret_value(), PHONE), MASKED, "manual")
    ]
    assert PHONE not in str(stored)

    again = cli("suppress", "add", PHONE, "--json")
    assert again.code == 0
    assert again.json()["added"] is False
    assert again.json()["reason"] == "manual"

    listed = cli("suppress", "list")
    assert listed.code == 0
    assert MASKED in listed.out
    assert "manual" in listed.out
    assert PHONE not in listed.out
    assert [r["to"] for r in cli("suppress", "list", "--json").json()] == [MASKED]

    removed = cli("suppress", "remove", PHONE)
    assert removed.code == 0
    assert removed.out.strip() == f"removed the suppression of {MASKED} (was manual)"
    assert rows(settings) == []
    gone = cli("suppress", "remove", PHONE)
    assert gone.code == 1
    assert gone.err.strip() == f"sms-relay suppress remove: {MASKED} is not suppressed"


def test_a_recipients_own_opt_out_is_removed_only_with_force(settings: Settings, cli: Cli) -> None:
    query(
        settings,
        "INSERT INTO suppressions (phone_hash, phone_masked, reason) VALUES (:h, :m, 'stop')",
        h=phone_hash(settings.phone_hash_key.get_secret_value(), PHONE),
        m=MASKED,
    )
    refused = cli("suppress", "remove", PHONE)
    assert refused.code == 2
    assert "suppressed for 'stop', not by an operator; --force" in refused.err
    assert len(rows(settings)) == 1
    assert cli("suppress", "remove", PHONE, "--force").code == 0
    assert rows(settings) == []


@pytest.mark.parametrize("phone", ["2125550161", "+1555123", "+12125550161\n", "+99912345678"])
def test_an_invalid_number_is_refused_without_being_echoed(
    settings: Settings, cli: Cli, phone: str
) -> None:
    result = cli("suppress", "add", phone)
    assert result.code == 2
    assert result.err.startswith("sms-relay suppress add: invalid number: ")
    assert result.err.count("\n") == 1
    assert phone.strip() not in result.err
    assert rows(settings) == []


async def test_a_suppressed_number_gets_no_sms(
    settings: Settings, simulator: SimulatorServer, cli: Cli
) -> None:
    assert (await cli.run_async("suppress", "add", PHONE)).code == 0
    event = order_event(phone=PHONE, order_id="8001")
    produce(settings, settings.kafka.topic_order_shipped, [event])
    async with running_consumer(settings):
        await eventually(lambda: state_of(settings, event["eventId"]) == "suppressed")
    assert created_to(simulator, PHONE) == []
