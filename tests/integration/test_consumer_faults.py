"""The consumer under Twilio's faults, poison input and opt-outs (real services)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from twilio.rest import Client

from sms_relay.adapters.kafka.headers import decode_headers
from sms_relay.adapters.postgres.deliveries import PostgresLedger
from sms_relay.adapters.postgres.engine import create_engine
from sms_relay.delivery.delivery_ports import ClaimRequest, Settlement
from sms_relay.domain.states import DeliveryState
from sms_relay.kinds.order_shipped import ORDER_SHIPPED
from sms_relay.masking import mask_phone, phone_hash
from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.conftest import TEST_FROM
from tests.support import (
    created_bodies,
    deliveries,
    eventually,
    order_event,
    produce,
    read_to_end,
    read_values_to_end,
    running_consumer,
    topic_reader,
)

pytestmark = pytest.mark.integration

PHONE = "+12125550142"


def statuses_of(values: list[dict[str, object]], event_id: str) -> list[object]:
    return [v["status"] for v in values if v["eventId"] == event_id]


async def test_throttled_twice_then_ok_is_sent_once(
    settings: Settings, simulator: SimulatorServer
) -> None:
    simulator.script(PHONE, ["429", "429", "ok"])
    event = order_event(phone=PHONE)
    produce(settings, settings.kafka.topic_order_shipped, [event])

    async with running_consumer(settings):
        await eventually(
            lambda: deliveries(settings).get(event["eventId"], {}).get("state") == "accepted"
        )

    row = deliveries(settings)[event["eventId"]]
    assert row["attempts"] == 3
    assert [m["outcome"] for m in simulator.messages()] == ["429", "429", "ok"]
    assert len(created_bodies(simulator.messages())) == 1


async def test_a_throttled_event_waits_without_holding_back_its_batch(
    settings: Settings, simulator: SimulatorServer
) -> None:
    # Five 429s with backoffs drawn from up to 1, 2, 4, 8, 8 s: many seconds of waiting,
    # during which the rest of its batch must settle and be reported (a backoff slept
    # inside the batch held all of them back until the throttled one was sent). The
    # fixture caps backoffs at 0.2 s; the shipped 8 s cap is restored here.
    sending = settings.sending.model_copy(
        update={"max_attempts": 6, "backoff_base_seconds": 1, "backoff_max_seconds": 8}
    )
    settings = settings.model_copy(update={"sending": sending})
    simulator.script(PHONE, ["429"] * 5 + ["ok"])
    throttled = order_event(phone=PHONE)
    others = [order_event(phone=f"+1212555{150 + i:04}") for i in range(5)]
    produce(settings, settings.kafka.topic_order_shipped, [throttled, *others])

    with topic_reader(settings, settings.kafka.topic_delivery_status) as statuses:
        async with running_consumer(settings):
            await eventually(
                lambda: all(
                    "accepted" in statuses_of(statuses.values(), e["eventId"]) for e in others
                )
            )
            waiting = deliveries(settings)[throttled["eventId"]]
            await eventually(
                lambda: "accepted" in statuses_of(statuses.values(), throttled["eventId"]),
                timeout=60,
            )

    assert waiting["state"] != "accepted", "the others waited for the throttled one"
    row = deliveries(settings)[throttled["eventId"]]
    assert (row["state"], row["attempts"]) == ("accepted", 6)
    assert len(created_bodies(simulator.messages())) == 6


async def test_invalid_recipient_is_failed_with_its_code_and_never_retried(
    settings: Settings, simulator: SimulatorServer
) -> None:
    event = order_event(phone="+15005550001")  # Twilio's magic number for error 21211
    produce(settings, settings.kafka.topic_order_shipped, [event])

    with topic_reader(settings, settings.kafka.topic_delivery_status) as statuses:
        async with running_consumer(settings):
            await eventually(lambda: "failed" in statuses_of(statuses.values(), event["eventId"]))
        failed = [v for v in statuses.values() if v["status"] == "failed"]

    assert failed[0]["errorCode"] == 21211
    assert len(simulator.messages()) == 1
    assert deliveries(settings)[event["eventId"]]["error_code"] == 21211


async def test_server_error_after_create_does_not_send_twice(
    settings: Settings, simulator: SimulatorServer
) -> None:
    simulator.script(PHONE, ["500_after_create"])
    event = order_event(phone=PHONE)
    produce(settings, settings.kafka.topic_order_shipped, [event])

    async with running_consumer(settings):
        await eventually(
            lambda: deliveries(settings).get(event["eventId"], {}).get("state") == "accepted"
        )

    created = [m for m in simulator.messages() if m.get("created")]
    assert len(created) == 1
    assert deliveries(settings)[event["eventId"]]["message_sid"] == created[0]["sid"]


async def test_dropped_connection_before_create_is_resent_after_reconciling(
    settings: Settings, simulator: SimulatorServer
) -> None:
    simulator.script(PHONE, ["drop_before_create"])
    event = order_event(phone=PHONE)
    produce(settings, settings.kafka.topic_order_shipped, [event])

    async with running_consumer(settings):
        await eventually(
            lambda: deliveries(settings).get(event["eventId"], {}).get("state") == "accepted"
        )

    assert len(created_bodies(simulator.messages())) == 1


async def test_long_outage_travels_the_retry_tiers_to_success(
    settings: Settings, simulator: SimulatorServer
) -> None:
    # 3 in-process attempts fail, the first tier's 3 fail too, the second tier succeeds.
    simulator.script(PHONE, ["503"] * 6 + ["ok"])
    event = order_event(phone=PHONE)
    produce(settings, settings.kafka.topic_order_shipped, [event])
    first_tier = settings.kafka.retry_topic(settings.kafka.topic_order_shipped, 1)

    with topic_reader(settings, first_tier) as retries:
        async with running_consumer(settings):
            await eventually(
                lambda: deliveries(settings).get(event["eventId"], {}).get("state") == "accepted",
                timeout=40,
            )
        await eventually(lambda: len(retries.poll()) == 1, what="the retry record")
    (retried,) = read_to_end(settings, first_tier)  # the consumer has stopped
    headers = decode_headers(retried)

    assert headers["sms-relay-attempt"] == "3"
    assert headers["sms-relay-original-topic"] == settings.kafka.topic_order_shipped
    assert int(headers["sms-relay-not-before"]) > 0
    assert deliveries(settings)[event["eventId"]]["attempts"] == 7
    assert len(created_bodies(simulator.messages())) == 1


async def test_outage_past_the_last_tier_dead_letters_the_event(
    settings: Settings, simulator: SimulatorServer
) -> None:
    simulator.script(PHONE, ["429"] * 9)
    event = order_event(phone=PHONE)
    produce(settings, settings.kafka.topic_order_shipped, [event])

    with (
        topic_reader(settings, settings.kafka.dlq_topic(settings.kafka.topic_order_shipped)) as dlq,
        topic_reader(settings, settings.kafka.topic_delivery_status) as statuses,
    ):
        async with running_consumer(settings):
            await eventually(lambda: len(dlq.poll()) == 1, timeout=40)
            await eventually(
                lambda: "dead_lettered" in statuses_of(statuses.values(), event["eventId"])
            )
    (record,) = read_to_end(
        settings, settings.kafka.dlq_topic(settings.kafka.topic_order_shipped)
    )  # the consumer has stopped

    assert decode_headers(record)["sms-relay-dlq-reason"] == "retries_exhausted"
    assert json.loads(record.value() or b"") == event
    assert deliveries(settings)[event["eventId"]]["state"] == "dead_lettered"
    assert created_bodies(simulator.messages()) == []


async def test_poison_records_go_to_the_dlq_while_good_ones_send(
    settings: Settings, simulator: SimulatorServer
) -> None:
    good = [order_event(order_id=f"20{i}") for i in range(3)]
    poison = [
        b"not json at all",
        json.dumps(order_event(phone="+15558675310")).encode(),  # not a valid number
        json.dumps(order_event(consentAt="2999-01-01T00:00:00Z")).encode(),
        json.dumps({**order_event(), "phone": "+12125550123\n"}).encode(),
    ]
    produce(
        settings,
        settings.kafka.topic_order_shipped,
        [good[0], *poison[:2], good[1], *poison[2:], good[2]],
    )

    with topic_reader(
        settings, settings.kafka.dlq_topic(settings.kafka.topic_order_shipped)
    ) as dlq:
        async with running_consumer(settings):
            await eventually(lambda: len(dlq.poll()) == 4)
            await eventually(
                lambda: sum(r["state"] == "accepted" for r in deliveries(settings).values()) == 3
            )
    dead_lettered = read_to_end(
        settings, settings.kafka.dlq_topic(settings.kafka.topic_order_shipped)
    )  # the consumer has stopped
    reasons = Counter(decode_headers(r)["sms-relay-dlq-reason"] for r in dead_lettered)
    errors = [decode_headers(r)["sms-relay-error"] for r in dead_lettered]
    values = sorted(r.value() or b"" for r in dead_lettered)

    assert reasons == {"invalid_json": 1, "schema_violation": 3}
    assert values == sorted(poison)  # original bytes, unchanged
    assert all("5558675310" not in e and "2125550123" not in e for e in errors)
    assert len(created_bodies(simulator.messages())) == 3


async def test_suppressed_number_gets_no_sms(
    settings: Settings, simulator: SimulatorServer
) -> None:
    from sqlalchemy import create_engine as create_sync_engine
    from sqlalchemy import text

    engine = create_sync_engine(settings.database_url.get_secret_value())
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO suppressions (phone_hash, phone_masked, reason) "
                "VALUES (:h, :m, 'stop')"
            ),
            {
                "h": phone_hash(settings.phone_hash_key.get_secret_value(), PHONE),
                "m": mask_phone(PHONE),
            },
        )
    engine.dispose()
    event = order_event(phone=PHONE)
    produce(settings, settings.kafka.topic_order_shipped, [event])

    with topic_reader(settings, settings.kafka.topic_delivery_status) as statuses:
        async with running_consumer(settings):
            await eventually(
                lambda: "suppressed" in statuses_of(statuses.values(), event["eventId"])
            )

    assert simulator.messages() == []
    assert deliveries(settings)[event["eventId"]]["state"] == "suppressed"


async def test_opt_out_error_suppresses_the_number_for_later_events(
    settings: Settings, simulator: SimulatorServer
) -> None:
    first, second = order_event(phone="+15005550004"), order_event(phone="+15005550004")
    produce(settings, settings.kafka.topic_order_shipped, [first])
    async with running_consumer(settings):
        await eventually(
            lambda: deliveries(settings).get(first["eventId"], {}).get("state") == "failed"
        )
        produce(settings, settings.kafka.topic_order_shipped, [second])
        await eventually(
            lambda: deliveries(settings).get(second["eventId"], {}).get("state") == "suppressed"
        )

    assert deliveries(settings)[first["eventId"]]["error_code"] == 21610
    assert len(simulator.messages()) == 1


async def test_settled_but_unpublished_event_is_published_on_redelivery(
    settings: Settings, simulator: SimulatorServer
) -> None:
    # A consumer settled the event, then died before its records reached Kafka.
    event = order_event(phone=PHONE)
    engine = create_engine(settings.database_url.get_secret_value())
    ledger = PostgresLedger(engine, "crashed-consumer", lease_seconds=10)
    request = ClaimRequest(event["eventId"], "order-shipped", "h", "+*******0142", None, None)
    token = (await ledger.claim([request]))[event["eventId"]].lease_token or 0
    await ledger.mark_sending([(event["eventId"], token, "body-hash")])
    await ledger.settle([Settlement(event["eventId"], token, DeliveryState.DEAD_LETTERED, 9)])
    await engine.dispose()
    produce(settings, settings.kafka.topic_order_shipped, [event])

    async with running_consumer(settings):
        await eventually(lambda: deliveries(settings)[event["eventId"]]["reported"])
    # The consumer has stopped (its records flushed): the topics hold all they ever will.
    (record,) = read_to_end(settings, settings.kafka.dlq_topic(settings.kafka.topic_order_shipped))
    assert decode_headers(record)["sms-relay-dlq-reason"] == "retries_exhausted"
    statuses = read_values_to_end(settings, settings.kafka.topic_delivery_status)
    assert statuses_of(statuses, event["eventId"]) == ["dead_lettered"]
    assert simulator.messages() == []


@pytest.mark.parametrize("reached_twilio", [False, True])
async def test_number_suppressed_while_a_send_was_in_doubt_is_reconciled_not_resent(
    reached_twilio: bool, settings: Settings, simulator: SimulatorServer
) -> None:
    # A consumer died mid-send, and the number opted out before the event came back.
    event = order_event(phone=PHONE)
    engine = create_engine(settings.database_url.get_secret_value())
    dead = PostgresLedger(engine, "dead-consumer", lease_seconds=0.1)
    request = ClaimRequest(event["eventId"], "order-shipped", "h", "+*******0142", None, None)
    token = (await dead.claim([request]))[event["eventId"]].lease_token or 0
    await dead.mark_sending([(event["eventId"], token, "body-hash")])
    earlier = None
    if reached_twilio:  # the dead consumer's request had created the message
        client = Client(settings.twilio.account_sid, settings.twilio.auth_token.get_secret_value())
        client.api.base_url = simulator.base_url
        body = ORDER_SHIPPED.render(ORDER_SHIPPED.parse(json.dumps(event).encode()))
        earlier = client.messages.create(to=PHONE, from_=TEST_FROM, body=body).sid
    await dead.suppress(
        phone_hash(settings.phone_hash_key.get_secret_value(), PHONE), mask_phone(PHONE), "stop"
    )
    await engine.dispose()
    produce(settings, settings.kafka.topic_order_shipped, [event])

    expected = "accepted" if reached_twilio else "suppressed"
    async with running_consumer(settings):
        await eventually(
            lambda: deliveries(settings)[event["eventId"]]["state"] == expected,
            what=f"{expected} after reconciling",
        )
    assert deliveries(settings)[event["eventId"]]["message_sid"] == earlier
    assert len(simulator.messages()) == (1 if reached_twilio else 0)
