"""Ingestion over HTTP: API keys, scopes, per-key limits shared by replicas, the audit
trail, duplicates that tell strangers nothing, destinations, and the separate listener."""

from __future__ import annotations

import json
from typing import Any

import pytest
from confluent_kafka import Message

from callbacks.app_keys import API_KEYS
from sms_relay.settings import DestinationSettings, Settings
from tests.callbacks.conftest import (
    Callbacks,
    callbacks_settings,
    insert_delivery,
    new_sid,
    query_rows,
    running_callbacks,
)
from tests.support import (
    TopicReader,
    eventually,
    order_event,
    read_to_end,
    reserved_port,
    topic_reader,
)

pytestmark = pytest.mark.integration


async def barrier(callbacks: Callbacks, key: str, orders: TopicReader) -> list[Message]:
    """Post one more accepted event and wait for it; then everything else on the topic
    (each 202 came after Kafka's ack, so the topic read to its end holds all of it)."""
    last = order_event()
    assert (await callbacks.post_event(last, key))[0] == 202
    await eventually(
        lambda: any(
            json.loads(m.value() or b"{}")["eventId"] == last["eventId"] for m in orders.poll()
        ),
        what="the barrier event",
    )
    return [
        m
        for m in read_to_end(callbacks.settings, orders.topic)
        if json.loads(m.value() or b"{}")["eventId"] != last["eventId"]
    ]


async def test_without_a_valid_key_the_answer_is_401_and_nothing_is_produced(
    callbacks: Callbacks,
) -> None:
    settings = callbacks.settings
    key = await callbacks.new_key()
    revoked = await callbacks.new_key()
    key_id = revoked.split("_")[1]
    assert await callbacks.app[API_KEYS].revoke(key_id) is not None
    wrong_secret = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    with topic_reader(settings, settings.kafka.topic_order_shipped) as orders:
        for credential in [None, "", "not-a-key", wrong_secret, revoked, key.upper()]:
            status, body, _ = await callbacks.post_event(order_event(), credential)
            assert (status, body["error"]) == (401, "unauthorized"), credential
        # Basic or other schemes are not accepted either.
        async with callbacks.session.post(
            callbacks.base_url + "/api/order-shipped-sms",
            json=order_event(),
            headers={"Authorization": f"Basic {key}"},
        ) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        produced = await barrier(callbacks, key, orders)
    assert produced == []
    assert callbacks.sample("sms_relay_order_requests_total", {"result": "unauthorized"}) == 7


async def test_a_key_may_send_only_its_kinds(callbacks: Callbacks) -> None:
    key = await callbacks.new_key(kinds=("appointment-reminder",))
    status, body, _ = await callbacks.post_event(order_event(), key)
    assert (status, body["error"]) == (403, "forbidden")


async def test_each_key_has_its_own_limit_shared_by_two_replicas(settings: Settings) -> None:
    first_settings = callbacks_settings(settings, callbacks_run_projection=False)
    second_settings = callbacks_settings(settings, callbacks_run_projection=False)
    async with (
        running_callbacks(first_settings) as first,
        running_callbacks(second_settings) as second,
    ):
        limited = await first.new_key("limited", rate_limit=3, window=60)
        other = await first.new_key("other", rate_limit=3, window=60)
        answers = []
        for replica in (first, second, first, second):
            answers.append(await replica.post_event(order_event(), limited))
        assert [a[0] for a in answers] == [202, 202, 202, 429]
        _status, body, retry_after = answers[-1]
        assert body["error"] == "rate_limited"
        assert 0 < int(retry_after) <= 60
        assert (await second.post_event(order_event(), other))[0] == 202


async def test_the_audit_trail_names_the_client_never_the_key(
    callbacks: Callbacks, database_url: str
) -> None:
    settings = callbacks.settings
    key = await callbacks.new_key("billing-service")
    key_id = key.split("_")[1]
    event = order_event()
    with topic_reader(settings, settings.kafka.topic_order_shipped) as orders:
        assert (await callbacks.post_event(event, key))[0] == 202
        await eventually(lambda: len(orders.poll()) == 1, what="the record")
    headers = dict(orders.records[0].headers() or [])
    assert headers["sms-relay-api-key-id"] == key_id.encode()
    assert headers["sms-relay-client"] == b"billing-service"
    rows = query_rows(database_url, "SELECT event_id, key_id, client FROM ingestions")
    assert rows == [{"event_id": event["eventId"], "key_id": key_id, "client": "billing-service"}]
    stored = query_rows(database_url, "SELECT * FROM api_keys")
    assert key not in json.dumps(stored, default=str)
    assert key.split("_", 2)[2] not in json.dumps(stored, default=str)


async def test_duplicates_tell_a_client_only_about_its_own_events(
    callbacks: Callbacks, database_url: str
) -> None:
    settings = callbacks.settings
    mine, theirs = await callbacks.new_key("shop"), await callbacks.new_key("billing")
    from_kafka = order_event()  # an event the consumer knows, that came over Kafka
    insert_delivery(database_url, from_kafka["eventId"], state="delivered", sid=new_sid())
    sent_by_them = order_event()
    with topic_reader(settings, settings.kafka.topic_order_shipped) as orders:
        assert (await callbacks.post_event(sent_by_them, theirs))[0] == 202
        probes = [
            await callbacks.post_event(from_kafka, mine),
            await callbacks.post_event(sent_by_them, mine),
        ]
        produced = await barrier(callbacks, mine, orders)
    # The same answer a new event gets: neither existence nor state shows.
    assert [p[:2] for p in probes] == [
        (202, {"eventId": from_kafka["eventId"], "status": "queued"}),
        (202, {"eventId": sent_by_them["eventId"], "status": "queued"}),
    ]
    assert [json.loads(m.value() or b"{}")["eventId"] for m in produced] == [
        sent_by_them["eventId"]
    ]
    # Its own client sees it as a duplicate, from any of its keys.
    again = await callbacks.post_event(sent_by_them, await callbacks.new_key("billing"))
    assert again[:2] == (
        200,
        {"eventId": sent_by_them["eventId"], "duplicate": True, "status": "queued"},
    )


async def test_destinations_outside_the_allowlists_are_400_and_counted(
    settings: Settings,
) -> None:
    restricted = callbacks_settings(
        settings,
        callbacks_run_projection=False,
        destinations=DestinationSettings(
            allowed_countries=("US",), allowed_link_hosts=("*.example.com", "example.com")
        ),
    )
    async with running_callbacks(restricted) as callbacks:
        key = await callbacks.new_key()
        canada = await callbacks.post_event(order_event(phone="+14165550123"), key)
        phishing = await callbacks.post_event(
            order_event(trackingUrl="https://example.com.evil.test/track"), key
        )
        subdomain = await callbacks.post_event(
            order_event(trackingUrl="https://track.example.com/1001"), key
        )
        refused = {
            reason: callbacks.sample("sms_relay_policy_refusals_total", {"reason": reason})
            for reason in ("country_not_allowed", "link_host_not_allowed")
        }
    assert canada[0] == 400
    assert [(f["field"], f["type"]) for f in canada[1]["fields"]] == [
        ("phone", "country_not_allowed")
    ]
    assert phishing[0] == 400
    assert [(f["field"], f["type"]) for f in phishing[1]["fields"]] == [
        ("trackingUrl", "link_host_not_allowed")
    ]
    assert "evil" not in json.dumps(phishing[1])
    assert subdomain[0] == 202
    assert refused == {"country_not_allowed": 1, "link_host_not_allowed": 1}


async def test_ingestion_can_live_on_its_own_listener(settings: Settings) -> None:
    apart = callbacks_settings(
        settings, callbacks_run_projection=False, ingest_port=reserved_port()
    )
    async with running_callbacks(apart) as callbacks:
        key = await callbacks.new_key()
        ingest_base = f"http://{apart.host}:{apart.ingest_port}"
        on_public = await callbacks.post_event(order_event(), key)
        on_ingest = await callbacks.post_event(order_event(), key, base=ingest_base)
        answers: dict[str, Any] = {}
        for base, name in ((callbacks.base_url, "public"), (ingest_base, "ingest")):
            async with callbacks.session.post(base + "/twilio/inbound", data={}) as response:
                answers[f"{name} twilio"] = response.status
            async with callbacks.session.get(base + "/healthz") as response:
                answers[f"{name} healthz"] = response.status
    assert on_public[0] == 404
    assert on_ingest[0] == 202
    assert answers == {
        "public twilio": 403,
        "public healthz": 200,
        "ingest twilio": 404,
        "ingest healthz": 200,
    }
