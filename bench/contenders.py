"""The contenders that are not `sms-relay` itself, each run as its own process.

    python -m bench.contenders plain|sdk|naive|bare|minimal|load '<json config>'

`plain` (b): bare aiohttp creates against the simulator, the limit. `sdk` (c): the twilio
SDK's async creates, nothing else. `naive` (a): the article's port, one event at a time
(poll, one PostgreSQL round trip, one SDK send, one offset commit). `bare`: an aiohttp
handler answering 204. `minimal` (e): the least a correct status-callback handler does
(the signature, one record acknowledged by Kafka before the 2xx). `load`: the webhook
load generator for callbacks, `bare` and `minimal`.
Each prints one JSON line: its CPU time and peak RSS, and what it measured.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp

from bench.common import callback_url, event_id, machine_cpu_seconds, order_body, phone, result_line

Send = Callable[[int], Awaitable[None]]
WARM_UP = 9_000_000  # first index of warm-up events


def _usage() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "machine_s": machine_cpu_seconds(),
        "wall_s": time.monotonic(),
    }


def _spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in ("cpu_s", "machine_s", "wall_s")} | _rss(after)


async def _drive(send: Send, config: dict[str, Any]) -> dict[str, Any]:
    """`concurrency` workers send events start..start+count; with `offered_rate`, event i
    is offered at t0 + i / rate (the latency runs), otherwise all at once."""
    concurrency, count, offered = config["concurrency"], config["count"], config["offered_rate"]
    # Warm-up (connections opened), not measured; its ids are outside the measured range.
    await asyncio.gather(*(send(WARM_UP + i) for i in range(concurrency)))
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    before = _usage()
    t0 = time.time()

    async def offer() -> None:
        for i in range(count):
            if offered:
                await asyncio.sleep(max(0.0, t0 + i / offered - time.time()))
            queue.put_nowait(config["start"] + i)
        for _ in range(concurrency):
            queue.put_nowait(None)

    async def worker() -> None:
        while (i := await queue.get()) is not None:
            await send(i)

    await asyncio.gather(offer(), *(worker() for _ in range(concurrency)))
    after = _usage()
    return {"t0_ms": t0 * 1000, **_spent(before, after)}


def _rss(usage: dict[str, float]) -> dict[str, float]:
    return {"peak_rss_mib": usage["peak_rss_mib"]}


async def plain(config: dict[str, Any]) -> dict[str, Any]:
    """(b) The same form the SDK posts, by a bare aiohttp session: the limit."""
    url = f"{config['base_url']}/2010-04-01/Accounts/{config['account_sid']}/Messages.json"
    auth = aiohttp.encode_basic_auth(config["account_sid"], config["auth_token"])
    headers = {
        "Authorization": auth,
        "Accept": "application/json",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    connector = aiohttp.TCPConnector(limit=config["concurrency"])
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def send(i: int) -> None:
            form = {
                "To": phone(i),
                "From": config["from_number"],
                "Body": order_body(i),
                "StatusCallback": callback_url(config["public_base_url"], _id(config, i)),
            }
            async with session.post(url, data=urlencode(form)) as response:
                json.loads(await response.read())

        return await _drive(send, config)


async def sdk(config: dict[str, Any]) -> dict[str, Any]:
    """(c) The twilio SDK's async client, configured as sms-relay configures it."""
    from sms_relay.adapters.twilio.twilio_client import close_client, create_client
    from sms_relay.settings import TwilioSettings

    settings = TwilioSettings(
        account_sid=config["account_sid"],
        auth_token=config["auth_token"],
        from_number=config["from_number"],
        api_base_url=config["base_url"],
    )
    client = create_client(settings)

    async def send(i: int) -> None:
        await client.messages.create_async(
            to=phone(i),
            from_=config["from_number"],
            body=order_body(i),
            status_callback=callback_url(config["public_base_url"], _id(config, i)),
        )

    try:
        return await _drive(send, config)
    finally:
        await close_client(client)


def naive(config: dict[str, Any]) -> dict[str, Any]:
    """(a) The article's loop: one record at a time, a claim, a send, a commit."""
    from confluent_kafka import Consumer
    from sqlalchemy import create_engine, text
    from twilio.rest import Client

    consumer = Consumer(
        {
            "bootstrap.servers": config["bootstrap"],
            "group.id": config["group"],
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([config["topic"]])
    engine = create_engine(config["database_url"])
    client = Client(config["account_sid"], config["auth_token"])
    client.api.base_url = config["base_url"]
    claim = text(
        "INSERT INTO deliveries (event_id, event_type, state, phone_hash, phone_masked) "
        "VALUES (:id, 'order-shipped', 'accepted', :phone, '') "
        "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
    )
    done, before = 0, None
    while done < config["count"]:
        message = consumer.poll(1.0)
        if message is None or message.error() is not None:
            continue
        if before is None:
            before = _usage()
        event = json.loads(message.value() or b"{}")
        with engine.begin() as connection:
            claimed = connection.execute(claim, {"id": event["eventId"], "phone": event["phone"]})
        if claimed.first() is not None:
            client.messages.create(
                to=event["phone"],
                from_=config["from_number"],
                body=f"Your order {event['orderId']} has shipped. Tracking: {event['trackingUrl']}",
                status_callback=callback_url(config["public_base_url"], event["eventId"]),
            )
        consumer.commit(message=message, asynchronous=False)
        done += 1
    after = _usage()
    consumer.close()
    engine.dispose()
    return _spent(before or after, after)


def bare(config: dict[str, Any]) -> None:
    """The floor for webhooks: an aiohttp handler that answers 204 and does nothing."""
    from aiohttp import web

    async def handler(_request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/twilio/status-callback", handler)
    web.run_app(app, host="127.0.0.1", port=config["port"], access_log=None, print=None)


def minimal(config: dict[str, Any]) -> None:
    """(e) The least a correct status-callback handler must do: check X-Twilio-Signature
    with the SDK's RequestValidator, produce one record (acks=all, the producer settings
    sms-relay uses) and await its delivery report before answering 204. Nothing else."""
    import threading

    from aiohttp import web
    from confluent_kafka import KafkaError, Message, Producer
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(config["auth_token"])
    base, topic = f"http://127.0.0.1:{config['port']}", config["topic"]
    producer = Producer(
        {
            "bootstrap.servers": config["bootstrap"],
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
        }
    )
    loop = asyncio.new_event_loop()

    def serve_reports() -> None:  # delivery reports come from poll(): a thread of their own
        while True:
            producer.poll(0.05)

    threading.Thread(target=serve_reports, daemon=True).start()

    def settle(done: asyncio.Future[None], error: KafkaError | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(RuntimeError(str(error)))

    async def handler(request: web.Request) -> web.Response:
        form = await request.post()
        signature = request.headers.get("X-Twilio-Signature", "")
        if not validator.validate(base + request.raw_path, form, signature):
            return web.Response(status=403)
        done: asyncio.Future[None] = loop.create_future()

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            loop.call_soon_threadsafe(settle, done, error)

        key = str(form.get("MessageSid", ""))
        producer.produce(topic, value=await request.read(), key=key, on_delivery=on_delivery)
        await done
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/twilio/status-callback", handler)
    web.run_app(app, host="127.0.0.1", port=config["port"], access_log=None, print=None, loop=loop)


async def load(config: dict[str, Any]) -> dict[str, Any]:
    """Signed status callbacks, `concurrency` in flight, for `seconds` after a warm-up.

    Forms and signatures are made before the clock starts: the generator spends its CPU
    on HTTP only, the same for every target.
    """
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(config["auth_token"])
    targets = config.get("targets") or [config["target"]]
    forms = []
    for i in range(config["forms"]):
        sid = f"SM{config['run']}{i:024d}"[:34]
        path = f"/twilio/status-callback?eventId={event_id(config['run'], i)}"
        form = {
            "AccountSid": config["account_sid"],
            "ApiVersion": "2010-04-01",
            "From": config["from_number"],
            "MessageSid": sid,
            "MessageStatus": "delivered" if i % 2 else "sent",
            "SmsSid": sid,
            "SmsStatus": "delivered" if i % 2 else "sent",
            "To": phone(i),
        }
        signature = validator.compute_signature(config["public_base_url"] + path, form)
        headers = {"X-Twilio-Signature": signature, "I-Twilio-Idempotency-Token": f"{sid}-{i}"}
        forms.append((path, form, headers))
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=config["concurrency"])
    async with aiohttp.ClientSession(connector=connector) as session:
        next_form = answered_2xx = 0  # answered_2xx: warm-up included

        async def worker(n: int, deadline: float, record: bool) -> None:
            nonlocal next_form, answered_2xx
            target = targets[n % len(targets)]  # the workers split evenly between targets
            while time.monotonic() < deadline and next_form < len(forms):
                path, form, headers = forms[next_form]
                url = target + path
                next_form += 1
                started = time.monotonic()
                async with session.post(url, data=form, headers=headers) as response:
                    await response.read()
                if 200 <= response.status < 300:
                    answered_2xx += 1
                if record:
                    latencies.append((time.monotonic() - started) * 1000)
                    statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1

        warm_until = time.monotonic() + config["warmup_seconds"]
        workers = range(config["concurrency"])
        await asyncio.gather(*(worker(n, warm_until, False) for n in workers))
        started = time.monotonic()
        until = started + config["seconds"]
        await asyncio.gather(*(worker(n, until, True) for n in workers))
        elapsed = time.monotonic() - started
    latencies.sort()
    answered = sum(statuses.values())
    return {
        "requests_per_s": answered / elapsed,
        "answered": answered,
        "statuses": statuses,
        "p50_ms": latencies[len(latencies) // 2] if latencies else 0.0,
        "p99_ms": latencies[int(len(latencies) * 0.99)] if latencies else 0.0,
        "forms_exhausted": next_form >= len(forms),
        "answered_2xx_all": answered_2xx,
    }


def _id(config: dict[str, Any], i: int) -> str:
    return event_id(config["run"], i)


def main(argv: list[str]) -> None:
    name, config = argv[0], json.loads(argv[1])
    if name == "bare":
        bare(config)
        return
    if name == "minimal":
        minimal(config)
        return
    if name == "naive":
        result_line(naive(config))
        return
    runs = {"plain": plain, "sdk": sdk, "load": load}
    result_line(asyncio.run(runs[name](config)))


if __name__ == "__main__":
    main(sys.argv[1:])
