"""Exactly one SMS per eventId against Twilio as it really behaves (issue 9).

One test per window of the issue, each against real Kafka, PostgreSQL and the simulator
(through the real twilio SDK), each of which failed on the code before the fix; then the
acceptance run: queueing, list lag and in-doubt faults at once, through the real consumer.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from twilio.rest import Client

from consumer.loop import ConsumeLoop
from schemas.events import DeliveryStatusChanged, Status
from sms_relay.adapters.kafka.headers import decode_headers
from sms_relay.adapters.kafka.topics import ensure_topics
from sms_relay.adapters.postgres.deliveries import PostgresLedger
from sms_relay.adapters.postgres.engine import create_engine
from sms_relay.adapters.postgres.status_history import PostgresProjectionStore
from sms_relay.delivery.delivery_ports import ClaimRequest, Settlement
from sms_relay.domain.states import DeliveryState
from sms_relay.kinds.order_shipped import ORDER_SHIPPED
from sms_relay.masking import body_hash, mask_phone
from sms_relay.metrics import CallbackMetrics
from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from sms_relay.status.status_projection import StatusProjection
from tests.conftest import TEST_FROM
from tests.ops import conftest as ops_fixtures
from tests.ops.conftest import Cli
from tests.ops.helpers import created_to, state_of
from tests.support import (
    DEFAULT_PHONE,
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
cli = ops_fixtures.cli  # the on-call's shell, with the test's settings (a fixture)

PHONE = "+12125550142"
SIBLINGS = tuple(f"+121255501{n}" for n in range(50, 58))
CROWD = tuple(f"+121255501{n}" for n in range(60, 68))
IN_DOUBT_FAULTS = ("500_after_create", "drop_after_create", "timeout_after_create")


# ---- helpers --------------------------------------------------------------------------


def with_sending(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"sending": settings.sending.model_copy(update=changes)})


def with_twilio(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"twilio": settings.twilio.model_copy(update=changes)})


async def settled(
    settings: Settings, event_id: str, state: str = "accepted", timeout: float = 30
) -> dict[str, Any]:
    """The event's ledger row once it is in `state`."""
    await eventually(
        lambda: deliveries(settings).get(event_id, {}).get("state") == state,
        timeout=timeout,
        what=f"{event_id} {state}",
    )
    return deliveries(settings)[event_id]


def created(simulator: SimulatorServer) -> list[dict[str, Any]]:
    """Every message the simulator really created (one per SMS a handset would get)."""
    return [m for m in simulator.messages() if m.get("created")]


def event_of(message: dict[str, Any]) -> str:
    """The eventId of a created message, from the StatusCallback URL the consumer sets."""
    callback = message["params"].get("StatusCallback", "")
    return str(parse_qs(urlsplit(callback).query)["eventId"][0])


def creates_per_event(messages: list[dict[str, Any]]) -> Counter[str]:
    return Counter(event_of(m) for m in messages)


def body_of(event: dict[str, Any]) -> str:
    return ORDER_SHIPPED.render(ORDER_SHIPPED.parse(json.dumps(event).encode()))


@contextmanager
def twilio_client(settings: Settings, simulator: SimulatorServer) -> Iterator[Client]:
    """A plain SDK client of the test's account: what an earlier process sent with."""
    client = Client(settings.twilio.account_sid, settings.twilio.auth_token.get_secret_value())
    client.api.base_url = simulator.base_url
    try:
        yield client
    finally:
        if client.http_client.session is not None:
            client.http_client.session.close()


def send_directly(settings: Settings, simulator: SimulatorServer, to: str, body: str) -> str:
    with twilio_client(settings, simulator) as client:
        return str(client.messages.create(to=to, from_=TEST_FROM, body=body).sid)


async def left_in_doubt(settings: Settings, event: dict[str, Any], body: str) -> None:
    """A consumer claimed the event, marked it `sending` with this body, and died."""
    engine = create_engine(settings.database_url.get_secret_value())
    dead = PostgresLedger(engine, "dead-consumer", lease_seconds=0.1)
    request = ClaimRequest(
        event["eventId"], "order-shipped", "h", mask_phone(event["phone"]), None, None
    )
    token = (await dead.claim([request]))[event["eventId"]].lease_token or 0
    await dead.mark_sending([(event["eventId"], token, body_hash(body))])
    await engine.dispose()


async def settled_by_a_consumer(
    settings: Settings, event: dict[str, Any], sid: str, body: str
) -> None:
    """A consumer sent the event (message `sid`) and settled it `accepted`."""
    engine = create_engine(settings.database_url.get_secret_value())
    ledger = PostgresLedger(engine, "earlier-consumer", lease_seconds=10)
    request = ClaimRequest(
        event["eventId"], "order-shipped", "h", mask_phone(event["phone"]), None, None
    )
    token = (await ledger.claim([request]))[event["eventId"]].lease_token or 0
    await ledger.mark_sending([(event["eventId"], token, body_hash(body))])
    accepted = Settlement(event["eventId"], token, DeliveryState.ACCEPTED, 1, message_sid=sid)
    await ledger.settle([accepted])
    await engine.dispose()


def statuses_of(values: list[dict[str, Any]], event_id: str) -> list[Any]:
    return [v["status"] for v in values if v["eventId"] == event_id]


@contextmanager
def logging_kept() -> Iterator[None]:
    """`sms-relay consumer` installs its own log handler on the root logger: undo it."""
    root = logging.getLogger()
    loggers = [root, *(logging.getLogger(name) for name in logging.root.manager.loggerDict)]
    levels = [logger.level for logger in loggers]
    handlers = root.handlers[:]
    try:
        yield
    finally:
        root.handlers[:] = handlers
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


# ---- 1. queued messages are invisible to DateSent ---------------------------------------


@pytest.mark.parametrize("fault", ["500_after_create", "drop_after_create"])
async def test_a_queued_message_in_doubt_is_found_not_sent_again(
    fault: str, settings: Settings, simulator: SimulatorServer
) -> None:
    # The sender's queue holds every message for the whole test: no date_sent, ever.
    simulator.configure(queue_hold_ms=120_000)
    simulator.script(PHONE, [fault])
    event = order_event(phone=PHONE)
    produce(settings, settings.kafka.topic_order_shipped, [event])

    async with running_consumer(settings):
        row = await settled(settings, event["eventId"])

    messages = created(simulator)
    assert [(m["outcome"], m["message_status"]) for m in messages] == [(fault, "queued")]
    assert row["message_sid"] == messages[0]["sid"]


# ---- 2. a failed reconciliation keeps the doubt ----------------------------------------


async def test_a_failed_reconciliation_keeps_the_doubt_for_the_next_claim(
    settings: Settings, simulator: SimulatorServer
) -> None:
    simulator.script(PHONE, ["500_after_create"])
    simulator.script(PHONE, ["503"], on="list")  # the list that would tell fails
    event = order_event(phone=PHONE)
    produce(settings, settings.kafka.topic_order_shipped, [event])
    first_tier = settings.kafka.retry_topic(settings.kafka.topic_order_shipped, 1)

    with topic_reader(settings, first_tier) as retries:
        async with running_consumer(settings):
            row = await settled(settings, event["eventId"])
        await eventually(lambda: len(retries.poll()) == 1, what="the retry-tier record")

    messages = created(simulator)
    assert len(messages) == 1
    assert row["message_sid"] == messages[0]["sid"]
    lists = [entry["outcome"] for entry in simulator.lists()]
    assert lists[0] == "503"
    assert "ok" in lists[1:]  # the claim from the retry tier asked Twilio first


# ---- 3. the settle window counts from the end of the uncertain attempt -----------------


async def test_a_message_listed_only_after_the_client_timeout_is_found(
    settings: Settings, simulator: SimulatorServer
) -> None:
    timeout = settings.twilio.request_timeout_seconds
    # Created at once, answered never (the client gives up after `timeout`), and listed
    # only 1.5 s after that: Twilio is still "creating" when our client has given up.
    simulator.configure(timeout_hold_s=timeout + 1, list_lag_ms=(timeout + 1.5) * 1000)
    simulator.script(PHONE, ["timeout_after_create"])
    patient = with_sending(settings, reconcile_horizon_seconds=4.0)
    event = order_event(phone=PHONE)
    produce(patient, patient.kafka.topic_order_shipped, [event])

    async with running_consumer(patient):
        row = await settled(patient, event["eventId"])

    messages = created(simulator)
    assert [m["outcome"] for m in messages] == ["timeout_after_create"]
    assert row["message_sid"] == messages[0]["sid"]


# ---- 4. an unexpected exception of one send leaves its siblings alone ------------------


async def test_an_unexpected_error_of_one_send_never_sends_its_siblings_twice(
    settings: Settings, simulator: SimulatorServer
) -> None:
    # Every Twilio call takes 1 s and two run at once, so the siblings are still being
    # sent, one pair after another, well after the odd one's proxy page came back.
    simulator.configure(latency_ms=1000)
    simulator.script(PHONE, ["html"])  # 200 with an HTML page: the SDK raises ValueError
    narrow = with_sending(settings, concurrency=2)
    odd = order_event(phone=PHONE, order_id="4100", trackingUrl="https://example.com/t/odd")
    siblings = [
        order_event(phone=phone, order_id="4100", trackingUrl=f"https://example.com/t/{i}")
        for i, phone in enumerate(SIBLINGS)
    ]
    events = [odd, *siblings]  # one order: one partition, one batch, the odd one first
    produce(narrow, narrow.kafka.topic_order_shipped, events)

    async with running_consumer(narrow):
        for event in events:
            await settled(narrow, event["eventId"], timeout=60)

    messages = created(simulator)
    assert creates_per_event(messages) == {e["eventId"]: 1 for e in events}
    rows = deliveries(narrow)
    by_sid = {m["sid"]: m for m in messages}
    assert all(by_sid[rows[e["eventId"]]["message_sid"]]["to"] == e["phone"] for e in events)
    assert [m["outcome"] for m in simulator.messages() if m["to"] == PHONE] == ["html", "ok"]


# ---- 5. the match uses the bodies actually sent ----------------------------------------


async def test_an_event_re_emitted_with_a_changed_body_is_reconciled_to_the_first_send(
    settings: Settings, simulator: SimulatorServer
) -> None:
    first = order_event(phone=PHONE, order_id="5100", trackingUrl="https://example.com/t/old")
    await left_in_doubt(settings, first, body_of(first))
    earlier = send_directly(settings, simulator, PHONE, body_of(first))  # it did reach Twilio
    # Upstream corrects the tracking link and emits the same event again.
    corrected = {**first, "trackingUrl": "https://example.com/t/corrected"}
    assert body_of(corrected) != body_of(first)
    produce(settings, settings.kafka.topic_order_shipped, [corrected])

    async with running_consumer(settings):
        row = await settled(settings, first["eventId"])

    assert row["message_sid"] == earlier
    assert len(created(simulator)) == 1


async def test_an_event_taken_over_in_doubt_is_marked_sending_only_for_its_resend(
    settings: Settings, simulator: SimulatorServer
) -> None:
    """While the heir only reconciles, the row is not `sending`: were the heir killed
    then, the next claim would count the doubt from the heir's lease and wait a second
    lease and horizon for a create that never happened (issue 10)."""
    patient = with_sending(settings, settle_seconds=4.0)  # the heir waits in the window
    event = order_event(phone=PHONE)
    await left_in_doubt(patient, event, body_of(event))
    produce(patient, patient.kafka.topic_order_shipped, [event])

    def heirs_row() -> dict[str, Any] | None:
        row = deliveries(patient).get(event["eventId"], {})
        return row if row.get("lease_owner") not in (None, "dead-consumer") else None

    async with running_consumer(patient):
        taken = await eventually(heirs_row, timeout=30, interval=0.05, what="the heir's claim")
        row = await settled(patient, event["eventId"])

    assert taken["state"] == "retry_scheduled", "marked `sending` while it only reconciles"
    assert taken["doubt_since"] is not None
    assert [m["outcome"] for m in created(simulator)] == ["ok"], "sent once, after the horizon"
    assert row["message_sid"] == created(simulator)[0]["sid"]


# ---- 6. one event cannot take another's SID --------------------------------------------


async def test_an_event_in_doubt_never_takes_the_message_of_another_event(
    settings: Settings, simulator: SimulatorServer
) -> None:
    # X and Y: same order, same number, same body. Y was left in doubt without a message;
    # X was sent (message M) and settled. Others of the order follow Y in its partition.
    x, y = order_event(phone=PHONE, order_id="6100"), order_event(phone=PHONE, order_id="6100")
    body = body_of(y)
    await left_in_doubt(settings, y, body)
    m = send_directly(settings, simulator, PHONE, body)
    await settled_by_a_consumer(settings, x, m, body)
    others = [order_event(phone=DEFAULT_PHONE, order_id="6100") for _ in range(3)]
    produce(settings, settings.kafka.topic_order_shipped, [y, *others])

    async with running_consumer(settings):
        for event in others:
            await settled(settings, event["eventId"])
        row = await settled(settings, y["eventId"])

    assert deliveries(settings)[x["eventId"]]["message_sid"] == m
    to_phone = created_to(simulator, PHONE)
    assert len(to_phone) == 2  # X's, and Y's own
    assert row["message_sid"] == to_phone[1]["sid"] != m
    assert len(created_to(simulator, DEFAULT_PHONE)) == len(others)


# ---- 7. account-level errors are transient ---------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("broken", "code"),
    [
        ({"auth_token": SecretStr("rotated-yesterday")}, 20003),  # 401
        ({"from_number": "+15005550007"}, 21606),  # Twilio's magic unusable From
    ],
    ids=["bad-credentials", "unusable-from"],
)
async def test_an_account_error_travels_the_tiers_to_the_dlq_and_replays(
    broken: dict[str, Any], code: int, settings: Settings, simulator: SimulatorServer, cli: Cli
) -> None:
    misconfigured = with_twilio(settings, **broken)
    event = order_event(phone=PHONE)
    produce(settings, settings.kafka.topic_order_shipped, [event])
    registry = CollectorRegistry()

    with topic_reader(
        settings, settings.kafka.dlq_topic(settings.kafka.topic_order_shipped)
    ) as dlq:
        async with running_consumer(misconfigured, registry):
            await eventually(
                lambda: state_of(settings, event["eventId"]) in {"dead_lettered", "failed"},
                timeout=40,
                what="the end of the retry tiers",
            )
            assert state_of(settings, event["eventId"]) == "dead_lettered"
            await eventually(lambda: len(dlq.poll()) == 1, what="the DLQ record")
    # The consumer has stopped: both topics hold all they will ever hold.
    assert "failed" not in statuses_of(
        read_values_to_end(settings, settings.kafka.topic_delivery_status), event["eventId"]
    )
    (dead_lettered,) = read_to_end(
        settings, settings.kafka.dlq_topic(settings.kafka.topic_order_shipped)
    )
    tiers = 1 + len(settings.sending.retry_tiers)
    counted = registry.get_sample_value(
        "sms_relay_twilio_account_errors_total", {"code": str(code)}
    )
    assert counted == tiers  # one refused create per tier: alerted at once
    assert deliveries(settings)[event["eventId"]]["error_code"] == code
    assert decode_headers(dead_lettered)["sms-relay-dlq-reason"] == "retries_exhausted"
    assert created(simulator) == []

    # Someone fixes the console; the on-call replays the DLQ with the right settings.
    replayed = await cli.run_async("dlq", "replay")
    assert replayed.code == 0, replayed.err
    assert "replayed 1 record(s)" in replayed.out
    async with running_consumer(settings):
        row = await settled(settings, event["eventId"])
    assert [m["sid"] for m in created(simulator)] == [row["message_sid"]]


# ---- 8. the consumer's `accepted` step cannot vanish -----------------------------------


async def test_accepted_is_published_even_after_a_callback_moved_the_row_on(
    settings: Settings, simulator: SimulatorServer
) -> None:
    event = order_event(phone=PHONE)
    sid = send_directly(settings, simulator, PHONE, body_of(event))
    # The consumer settled `accepted`, then died before publishing it ...
    await settled_by_a_consumer(settings, event, sid, body_of(event))
    # ... and Twilio's `delivered` callback reached the projection first.
    engine = create_engine(settings.database_url.get_secret_value())
    projection = StatusProjection(
        PostgresProjectionStore(engine), CallbackMetrics(CollectorRegistry())
    )
    delivered = DeliveryStatusChanged(
        eventId=event["eventId"],
        messageSid=sid,
        status=Status.DELIVERED,
        source="callbacks",
        idempotencyToken="callback-delivered-1",
    )
    await projection.apply([delivered])
    await engine.dispose()
    assert state_of(settings, event["eventId"]) == "delivered"
    produce(settings, settings.kafka.topic_order_shipped, [event])  # redelivered

    registry = CollectorRegistry()
    with topic_reader(settings, settings.kafka.topic_delivery_status) as statuses:
        async with running_consumer(settings, registry):
            await eventually(
                lambda: registry.get_sample_value(
                    "sms_relay_outcomes_total", {"outcome": "duplicate"}
                ),
                what="the redelivered record decided",
            )
            await eventually(
                lambda: "accepted" in statuses_of(statuses.values(), event["eventId"]),
                timeout=10,
                what="the accepted status",
            )
    # The consumer has stopped: the topic holds all it will ever hold.
    published = [
        v
        for v in read_values_to_end(settings, settings.kafka.topic_delivery_status)
        if v["eventId"] == event["eventId"]
    ]

    assert [(v["status"], v["messageSid"]) for v in published] == [("accepted", sid)]
    assert state_of(settings, event["eventId"]) == "delivered"
    assert len(created(simulator)) == 1


# ---- 9. one bad header never kills the loop; a dead loop exits non-zero ----------------


@pytest.mark.parametrize(
    ("header", "value"),
    [("attempt", b"three"), ("not-before", b"soon")],
    ids=["attempt", "not-before"],
)
async def test_a_malformed_header_dead_letters_its_record_and_the_next_is_sent(
    header: str, value: bytes, settings: Settings, simulator: SimulatorServer
) -> None:
    bad = order_event(phone=DEFAULT_PHONE, order_id="9100")
    good = order_event(phone=PHONE, order_id="9100")  # same order: right behind it
    topic = settings.kafka.topic_order_shipped
    produce(settings, topic, [bad], headers=[(f"sms-relay-{header}", value)])
    produce(settings, topic, [good])

    with topic_reader(
        settings, settings.kafka.dlq_topic(settings.kafka.topic_order_shipped)
    ) as dlq:
        async with running_consumer(settings):
            await settled(settings, good["eventId"])
            await eventually(lambda: len(dlq.poll()) == 1, what="the DLQ record")
    (record,) = read_to_end(
        settings, settings.kafka.dlq_topic(settings.kafka.topic_order_shipped)
    )  # the consumer has stopped

    assert decode_headers(record)["sms-relay-dlq-reason"] == "invalid_header"
    assert json.loads(record.value() or b"") == bad
    assert [m["to"] for m in created(simulator)] == [PHONE]
    assert bad["eventId"] not in deliveries(settings)


@pytest.mark.timeout(60)  # the old consumer waited forever with its loop dead
def test_the_consumer_exits_non_zero_when_its_consume_loop_dies(
    settings: Settings, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def dies(_loop: ConsumeLoop, _stop: object) -> None:
        raise RuntimeError("the consume loop broke")

    monkeypatch.setattr(ConsumeLoop, "run", dies)
    with logging_kept():
        result = cli("consumer")

    assert result.code == 1


# ---- the acceptance run ----------------------------------------------------------------


@pytest.mark.slow
async def test_in_doubt_events_through_two_consumers_create_exactly_one_message_each(
    settings: Settings, simulator: SimulatorServer
) -> None:
    timeout = settings.twilio.request_timeout_seconds
    horizon = settings.sending.reconcile_horizon_seconds
    simulator.configure(
        seed=9,
        rate_500_after_create=0.12,
        rate_drop_after_create=0.12,
        rate_timeout_after_create=0.08,
        rate_list_500=0.1,
        queue_hold_ms=2_000,  # queued, no date_sent, while reconciliation runs
        list_lag_ms=horizon * 600,  # listed late, but within the horizon
        timeout_hold_s=timeout + 0.5,  # just past the client's timeout
    )
    simulator.reset()  # the faults drawn from the seed
    # Four tiers: a failed list moves an event in doubt one tier on; it would take five
    # failed lists in a row to dead-letter one.
    tiers = ("1s", "2s", "3s", "4s")
    ensure_topics(settings.kafka, tiers)
    run = with_sending(settings, retry_tiers=tiers)
    events = [order_event(phone=CROWD[i % len(CROWD)], order_id=f"70{i:02d}") for i in range(40)]
    produce(run, run.kafka.topic_order_shipped, events)
    ids = {e["eventId"] for e in events}
    registries = [CollectorRegistry(), CollectorRegistry()]

    async with running_consumer(run, registries[0]), running_consumer(run, registries[1]):
        await eventually(
            lambda: sum(r["state"] == "accepted" for r in deliveries(run).values()) == len(ids),
            timeout=50,
            what="every event accepted",
        )

    messages = created(simulator)
    in_doubt = [m for m in messages if m["outcome"] in IN_DOUBT_FAULTS]

    def total(name: str, labels: dict[str, str] | None = None) -> float:
        return sum(r.get_sample_value(name, labels or {}) or 0 for r in registries)

    found = total("sms_relay_in_doubt_total", {"resolution": "found"})
    sent = [r.get_sample_value("sms_relay_outcomes_total", {"outcome": "sent"}) for r in registries]
    failed_lists = sum(entry["outcome"] != "ok" for entry in simulator.lists())
    print(
        f"\nacceptance: {len(events)} events, {len(simulator.messages())} creates, "
        f"{len(messages)} created, {len(in_doubt)} in doubt "
        f"({dict(Counter(m['outcome'] for m in in_doubt))}), {len(simulator.lists())} lists "
        f"({failed_lists} failed), {found:.0f} resolved by finding the message, "
        f"{total('sms_relay_in_doubt_resends_total'):.0f} resent after the horizon; "
        f"accepted by each consumer: {sent}"
    )
    assert creates_per_event(messages) == dict.fromkeys(ids, 1)
    rows = deliveries(run)
    assert all(rows[event_of(m)]["message_sid"] == m["sid"] for m in messages)
    assert in_doubt, "the seed drew no in-doubt create: the run proved nothing"
    assert found >= len(in_doubt)  # each one found, none resent blind
    assert total("sms_relay_in_doubt_resends_total") == 0
