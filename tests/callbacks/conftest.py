"""Fixtures of the callbacks service tests: settings with a real port, a running app, signing."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from multidict import MultiDict
from prometheus_client import CollectorRegistry
from pydantic import AnyHttpUrl
from sqlalchemy import create_engine, text
from twilio.request_validator import RequestValidator

from callbacks.app import PrivacyAccessLogger, create_app
from callbacks.app_keys import API_KEYS, KAFKA_PROBE
from sms_relay.settings import KafkaSettings, Settings
from tests.support import DEFAULT_PHONE, eventually, reserved_port, wait_for_topics

Form = Mapping[str, str] | MultiDict[str]


def callbacks_settings(settings: Settings, **changes: Any) -> Settings:
    """The test's settings, served on a free port that is also the public URL Twilio calls."""
    port = reserved_port()
    update: dict[str, Any] = {
        "port": port,
        "public_base_url": AnyHttpUrl(f"http://127.0.0.1:{port}"),
        "callbacks_kafka_deadline_seconds": 1.0,
        "callbacks_kafka_message_timeout_seconds": 2.0,
        "callbacks_relay_interval_seconds": 0.2,
        "callbacks_reconcile_interval_seconds": 0.2,
        **changes,
    }
    return settings.model_copy(update=update)


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    return callbacks_settings(settings)


@dataclass
class Callbacks:
    """A running callbacks app and a client session to call it."""

    app: web.Application
    settings: Settings
    registry: CollectorRegistry
    session: aiohttp.ClientSession

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    @property
    def public_base_url(self) -> str:
        return str(self.settings.public_base_url).rstrip("/")

    def sign(self, path: str, form: Form, *, base: str | None = None) -> str:
        token = self.settings.twilio.auth_token.get_secret_value()
        url = (base or self.public_base_url) + path
        return str(RequestValidator(token).compute_signature(url, form))

    async def post_signed(
        self,
        path: str,
        form: Form,
        *,
        signature: str | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """POST `form` to `path` (query included), signed unless `signature` is given."""
        sent = {"X-Twilio-Signature": self.sign(path, form) if signature is None else signature}
        if token is not None:
            sent["I-Twilio-Idempotency-Token"] = token
        sent.update(headers or {})
        # Encoded here, as Twilio does, so any field name or value goes through as it is.
        data = urlencode(list(form.items()) if isinstance(form, MultiDict) else dict(form))
        sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        async with self.session.post(self.base_url + path, data=data, headers=sent) as response:
            return response.status, await _body(response)

    async def post_json(self, path: str, body: Any, **headers: str) -> tuple[int, Any, str]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.session.post(
            self.base_url + path,
            data=raw,
            headers={"Content-Type": "application/json", **headers},
        ) as response:
            return response.status, await _body(response), response.headers.get("Retry-After", "")

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.base_url + path) as response:
            return response.status, await _body(response)

    async def new_key(
        self,
        client: str = "shop",
        kinds: tuple[str, ...] = ("order-shipped",),
        rate_limit: int = 600,
        window: float = 60.0,
    ) -> str:
        """A fresh API key, made as `sms-relay api-keys create` makes it."""
        _record, key = await self.app[API_KEYS].create(client, list(kinds), rate_limit, window)
        return key

    async def post_event(
        self, body: Any, key: str | None, *, base: str | None = None
    ) -> tuple[int, Any, str]:
        """POST an order-shipped event with `key` as its bearer credential (None: without)."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        url = (base or self.base_url) + "/api/order-shipped-sms"
        async with self.session.post(url, data=raw, headers=headers) as response:
            return response.status, await _body(response), response.headers.get("Retry-After", "")

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0


async def _body(response: aiohttp.ClientResponse) -> Any:
    text_body = await response.text()
    if response.content_type == "application/json":
        return json.loads(text_body)
    return text_body


def _broker_listens(kafka: KafkaSettings) -> bool:
    """Whether anything listens at the first bootstrap address (a test's "Kafka away" is a
    port where nothing does: refused at once)."""
    host, _, port = kafka.bootstrap_servers.split(",")[0].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError:
        return False
    return True


async def _producer_warm(app: web.Application, settings: Settings) -> None:
    """Before the app serves: its topics in the broker's metadata and its producer
    connected. The app warms its producer within the 1 s Kafka deadline these tests give
    it, which a busy host misses right after the topics were made; the first callback
    would then miss its deadline too and be outboxed, not published."""
    kafka = settings.kafka
    if not _broker_listens(kafka):
        return
    names = [kafka.topic_delivery_status, kafka.topic_phone_verified, kafka.topic_order_shipped]
    await asyncio.to_thread(wait_for_topics, kafka, names)
    await eventually(lambda: app[KAFKA_PROBE](5), timeout=30, what="the app's producer connected")


@asynccontextmanager
async def running_callbacks(settings: Settings) -> AsyncIterator[Callbacks]:
    """The real app on its own port (a real socket: the simulator can call it back), and
    on its ingest listener too when the settings name one."""
    registry = CollectorRegistry()
    app = create_app(settings, registry=registry)
    runner = web.AppRunner(app, access_log_class=PrivacyAccessLogger, handle_signals=False)
    await runner.setup()
    try:
        await _producer_warm(app, settings)
        await web.TCPSite(runner, settings.host, settings.port).start()
        if settings.ingest_listener is not None:
            await web.TCPSite(runner, *settings.ingest_listener).start()
        async with aiohttp.ClientSession() as session:
            yield Callbacks(app, settings, registry, session)
    finally:
        await runner.cleanup()


T = TypeVar("T")


@dataclass
class ThreadedCallbacks:
    """The real app served by its own event loop in a thread, for synchronous clients
    (schemathesis, hypothesis): `run(coroutine)` runs on that loop."""

    callbacks: Callbacks
    loop: asyncio.AbstractEventLoop

    def run(self, coroutine: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await coroutine

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(30)


@contextmanager
def callbacks_in_thread(settings: Settings) -> Iterator[ThreadedCallbacks]:
    loop = asyncio.new_event_loop()
    started: list[Callbacks] = []
    ready, stop = threading.Event(), asyncio.Event()

    async def serve() -> None:
        async with running_callbacks(settings) as running:
            started.append(running)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(30), "the callbacks app did not start"
        yield ThreadedCallbacks(started[0], loop)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


@pytest.fixture
async def callbacks(app_settings: Settings) -> AsyncIterator[Callbacks]:
    async with running_callbacks(app_settings) as running:
        yield running


def callback_form(
    sid: str,
    status: str,
    *,
    account_sid: str,
    to: str = DEFAULT_PHONE,
    error_code: int | None = None,
) -> dict[str, str]:
    """A status callback form as Twilio posts it."""
    form = {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "From": "+15005550006",
        "MessageSid": sid,
        "MessageStatus": status,
        "SmsSid": sid,
        "SmsStatus": status,
        "To": to,
    }
    if error_code is not None:
        form["ErrorCode"] = str(error_code)
    return form


def new_sid() -> str:
    return "SM" + uuid.uuid4().hex


def new_event_id() -> str:
    return f"order_{uuid.uuid4().hex[:12]}_shipped_v1"


def query_rows(database_url: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Read PostgreSQL synchronously (a short-lived engine of the test's own schema)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return [dict(row) for row in connection.execute(text(sql), params).mappings()]
    finally:
        engine.dispose()


def insert_delivery(
    database_url: str,
    event_id: str,
    *,
    state: str = "accepted",
    sid: str | None = None,
    phone_hash: str = "hash",
    phone_masked: str = "+*******0123",
) -> None:
    """A delivery row as the consumer's ledger leaves it after Twilio accepted the message."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO deliveries (event_id, event_type, state, phone_hash, "
                    "phone_masked, message_sid) VALUES (:e, 'order-shipped', :s, :h, :m, :sid)"
                ),
                {"e": event_id, "s": state, "h": phone_hash, "m": phone_masked, "sid": sid},
            )
            if state == "accepted":
                connection.execute(
                    text(
                        "INSERT INTO status_history (event_id, message_sid, status, source, "
                        "idempotency_token, occurred_at) "
                        "VALUES (:e, :sid, 'accepted', 'consumer', :t, now())"
                    ),
                    {"e": event_id, "sid": sid, "t": f"consumer:{event_id}:accepted:1"},
                )
    finally:
        engine.dispose()


def execute(database_url: str, sql: str, **params: Any) -> None:
    """Write to PostgreSQL and commit."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(sql), params)
    finally:
        engine.dispose()
