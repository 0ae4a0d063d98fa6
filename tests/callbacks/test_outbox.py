"""2xx only once durable: Kafka's ack, or the PostgreSQL outbox that a relay drains later."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from sms_relay.settings import KafkaSettings, Settings
from tests.callbacks.conftest import (
    callback_form,
    callbacks_settings,
    insert_delivery,
    new_event_id,
    new_sid,
    query_rows,
    running_callbacks,
)
from tests.support import (
    eventually,
    read_to_end,
    read_values_to_end,
    reserved_port,
    topic_reader,
)

pytestmark = pytest.mark.integration


def kafka_away(settings: Settings) -> KafkaSettings:
    """The same topics on a port where no broker listens."""
    return settings.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{reserved_port()}"})


def database_away() -> SecretStr:
    return SecretStr(f"postgresql+psycopg://postgres@127.0.0.1:{reserved_port()}/none")


async def test_kafka_unreachable_callbacks_are_answered_2xx_and_published_once_later(
    settings: Settings, database_url: str
) -> None:
    """Kafka away: every callback is answered 2xx from the outbox, none before its row is
    committed; once a relay reaches Kafka each is on delivery-status exactly once, in order."""
    event_id, sid = new_event_id(), new_sid()
    account = settings.twilio.account_sid
    steps = ["queued", "sent", "delivered", "read"]
    path = f"/twilio/status-callback?eventId={event_id}"
    away = callbacks_settings(settings, kafka=kafka_away(settings), callbacks_run_projection=False)
    async with running_callbacks(away) as callbacks:
        answers = []
        for step in steps:
            form = callback_form(sid, step, account_sid=account)
            answer = await callbacks.post_signed(path, form, token=f"{sid}:{step}")
            answers.append(answer)
            # Durable before the answer: the row is there the moment the 2xx is.
            rows = query_rows(
                database_url,
                "SELECT published_at FROM callback_outbox WHERE idempotency_token = :t",
                t=step_token(sid, step),
            )
            assert rows == [{"published_at": None}]
        # Twilio retries the one it thinks was lost: still one row.
        repeat = await callbacks.post_signed(
            path, callback_form(sid, "sent", account_sid=account), token=f"{sid}:sent"
        )
        assert callbacks.sample("sms_relay_kafka_deadline_missed_total") >= 1
    assert answers == [(200, {"result": "outboxed"})] * len(steps)
    assert repeat == (200, {"result": "duplicate"})

    # Nothing leaked out while Kafka was away (that app is closed: the topic is final).
    assert read_to_end(settings, settings.kafka.topic_delivery_status) == []
    with topic_reader(settings, settings.kafka.topic_delivery_status) as statuses:
        # Kafka is back (here: a replica that reaches it); its relay drains the outbox.
        back = callbacks_settings(settings, callbacks_run_projection=False)
        async with running_callbacks(back) as callbacks:

            def unpublished() -> bool:
                return not query_rows(
                    database_url, "SELECT id FROM callback_outbox WHERE published_at IS NULL"
                )

            await eventually(unpublished, what="the outbox drained")
            # The relay counts a batch once its commit returns: a moment after the rows
            # read as published (a count read at once raced it, 1 of 4 on a busy host).
            relayed_total = "sms_relay_outbox_relayed_total"
            await eventually(
                lambda: callbacks.sample(relayed_total) >= len(steps), what="the relay's count"
            )
            # A last callback on the same key (same partition): a late copy of any earlier
            # record would be on the topic before it. (Another SID: the same SID and status
            # would be a replay, a duplicate whatever its token.)
            barrier_sid = new_sid()
            barrier = callback_form(barrier_sid, "read", account_sid=account)
            await callbacks.post_signed(path, barrier, token="barrier")
            await eventually(
                lambda: any(r["messageSid"] == barrier_sid for r in statuses.values()),
                what="the barrier record",
            )
            relayed = callbacks.sample(relayed_total)
    # That app is closed too: the whole topic, the barrier last.
    *records, last = read_values_to_end(settings, settings.kafka.topic_delivery_status)
    assert last["messageSid"] == barrier_sid
    assert [r["status"] for r in records] == steps
    assert [r["idempotencyToken"] for r in records] == [step_token(sid, s) for s in steps]
    assert {r["eventId"] for r in records} == {event_id}
    assert relayed == len(steps)


async def test_database_away_still_publishes_through_kafka(settings: Settings) -> None:
    no_db = callbacks_settings(
        settings, database_url=database_away(), callbacks_run_projection=False
    )
    event_id, sid = new_event_id(), new_sid()
    with topic_reader(settings, settings.kafka.topic_delivery_status) as statuses:
        async with running_callbacks(no_db) as callbacks:
            status, body = await callbacks.post_signed(
                f"/twilio/status-callback?eventId={event_id}",
                callback_form(sid, "delivered", account_sid=settings.twilio.account_sid),
            )
        # Kafka's ack alone makes it durable: PostgreSQL is not on the path.
        assert (status, body) == (200, {"result": "published"})
        await eventually(lambda: len(statuses.values()) == 1, what="the record")
    # The app is closed: the topic holds that one record and nothing more.
    assert [r["eventId"] for r in read_values_to_end(settings, statuses.topic)] == [event_id]


async def test_neither_kafka_nor_database_answers_503(settings: Settings) -> None:
    nothing = callbacks_settings(
        settings,
        kafka=kafka_away(settings),
        database_url=database_away(),
        callbacks_run_projection=False,
    )
    async with running_callbacks(nothing) as callbacks:
        status, body = await callbacks.post_signed(
            f"/twilio/status-callback?eventId={new_event_id()}",
            callback_form(new_sid(), "delivered", account_sid=settings.twilio.account_sid),
        )
        assert (status, body["error"]) == (503, "unavailable")
        ready, checks = await callbacks.get("/readyz")
        assert ready == 503
        assert checks["checks"] == {"kafka": "down", "database": "down"}
        unavailable = callbacks.sample("sms_relay_callbacks_total", {"result": "unavailable"})
    assert unavailable == 1


def step_token(sid: str, status: str) -> str:
    """The token of a status callback's record: what the signature covers, never Twilio's."""
    return f"callbacks:{sid}:{status}:None"


async def test_replayed_callback_is_one_step_for_every_reader(
    settings: Settings, database_url: str
) -> None:
    """Twilio's retries and a captured callback replayed (same token, a fresh one, none)
    may each reach delivery-status while Kafka answers, but as the same record: one
    token, so the projection records the step once and moves the delivery once."""
    app_settings = callbacks_settings(settings)  # the status projection runs
    event_id, sid = new_event_id(), new_sid()
    insert_delivery(database_url, event_id, sid=sid)
    account = settings.twilio.account_sid
    form = callback_form(sid, "delivered", account_sid=account)
    path = f"/twilio/status-callback?eventId={event_id}"
    with topic_reader(settings, settings.kafka.topic_delivery_status) as statuses:
        async with running_callbacks(app_settings) as callbacks:
            first = await callbacks.post_signed(path, form, token="dup-token")
            # Twilio's retries and duplicates, some of them at the same moment.
            again = await asyncio.gather(
                *(callbacks.post_signed(path, form, token="dup-token") for _ in range(4))
            )
            # The same step with no token, or a fresh one (a captured request replayed): the
            # token is not signed, what the signature covers identifies the step.
            untokened = [await callbacks.post_signed(path, form) for _ in range(2)]
            fresh = await callbacks.post_signed(path, form, token="forged-fresh-token")
            # The same SID and status with another error code is another step.
            failed = callback_form(sid, "delivered", account_sid=account, error_code=30003)
            other = await callbacks.post_signed(path, failed, token="other-code")
            # A last record on the same key: every copy is on the topic before it.
            barrier = callback_form(sid, "read", account_sid=account)
            await callbacks.post_signed(path, barrier, token="barrier")
            await eventually(
                lambda: any(r["status"] == "read" for r in statuses.values()),
                what="the barrier record",
            )

            def projected() -> bool:
                rows = query_rows(
                    database_url, "SELECT state FROM deliveries WHERE event_id = :e", e=event_id
                )
                return rows == [{"state": "read"}]

            # The projection reads in order: once the barrier moved the row, it saw every copy.
            await eventually(projected, what="the projection past the barrier")
            history = query_rows(
                database_url,
                "SELECT status, error_code, idempotency_token FROM status_history "
                "WHERE event_id = :e AND source = 'callbacks' ORDER BY id",
                e=event_id,
            )
    *records, last = read_values_to_end(settings, settings.kafka.topic_delivery_status)
    assert last["status"] == "read"
    answers = [first, *again, *untokened, fresh, other]
    assert all(answer == (200, {"result": "published"}) for answer in answers)
    # Eight copies of one step and one other step; every copy with the step's token.
    delivered = step_token(sid, "delivered")
    other_token = f"callbacks:{sid}:delivered:30003"
    assert [r["idempotencyToken"] for r in records] == [delivered] * 8 + [other_token]
    assert {(r["eventId"], r["messageSid"], r["status"]) for r in records} == {
        (event_id, sid, "delivered")
    }
    # The reader saw one step each: the copies changed nothing.
    steps = sorted((r["idempotency_token"], r["status"], r["error_code"] or 0) for r in history)
    assert steps == sorted(
        [
            (delivered, "delivered", 0),
            (other_token, "delivered", 30003),
            (step_token(sid, "read"), "read", 0),
        ]
    )


async def test_replay_while_kafka_is_away_is_answered_duplicate_and_one_step_after(
    settings: Settings, database_url: str
) -> None:
    """A step published while Kafka answered, then replayed (fresh token) while it is
    away: the outbox takes the replay (a row per step: one), the relay publishes it once
    Kafka is back, and the projection still records the step once."""
    event_id, sid = new_event_id(), new_sid()
    insert_delivery(database_url, event_id, sid=sid)
    account = settings.twilio.account_sid
    path = f"/twilio/status-callback?eventId={event_id}"
    form = callback_form(sid, "delivered", account_sid=account)
    async with running_callbacks(callbacks_settings(settings)) as callbacks:
        published = await callbacks.post_signed(path, form, token="first")
    away = callbacks_settings(settings, kafka=kafka_away(settings), callbacks_run_projection=False)
    async with running_callbacks(away) as callbacks:
        outboxed = await callbacks.post_signed(path, form, token="replayed-1")
        duplicate = await callbacks.post_signed(path, form, token="replayed-2")
    assert published == (200, {"result": "published"})
    assert outboxed == (200, {"result": "outboxed"})
    assert duplicate == (200, {"result": "duplicate"})
    async with running_callbacks(callbacks_settings(settings)) as callbacks:

        def relayed() -> bool:
            return not query_rows(
                database_url, "SELECT id FROM callback_outbox WHERE published_at IS NULL"
            )

        await eventually(relayed, what="the outbox relayed")
        # Then a last step on the same key: once the projection applied it, it had read
        # the relayed copy before it.
        await callbacks.post_signed(path, callback_form(sid, "read", account_sid=account))

        def projected() -> bool:
            rows = query_rows(
                database_url, "SELECT state FROM deliveries WHERE event_id = :e", e=event_id
            )
            return rows == [{"state": "read"}]

        await eventually(projected, what="the projection past the last step")
    *records, last = read_values_to_end(settings, settings.kafka.topic_delivery_status)
    assert last["idempotencyToken"] == step_token(sid, "read")
    # The step published, then its replay relayed: two copies, one token.
    assert [r["idempotencyToken"] for r in records] == [step_token(sid, "delivered")] * 2
    history = query_rows(
        database_url,
        "SELECT status FROM status_history WHERE event_id = :e AND source = 'callbacks'",
        e=event_id,
    )
    assert sorted(r["status"] for r in history) == ["delivered", "read"]
