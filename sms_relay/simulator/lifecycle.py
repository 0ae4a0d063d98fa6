"""Moves created messages through sent -> delivered and posts signed status callbacks."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from .config import MAX_RETRY_COUNT, SimulatorConfig, parse_retry_policy
from .store import Message, Store, iso8601_ms
from .wire import (
    API_VERSION,
    DELIVERY_ERROR_MESSAGES,
    FAILED_CODES,
    IDEMPOTENCY_HEADER,
    SERVICE_SENDER,
    SIGNATURE_HEADER,
    USER_AGENT,
)

log = logging.getLogger(__name__)

_TOKEN_NAMESPACE = uuid.UUID("6f1c3f0e-3b8a-4c57-9a57-5a7d1c0b7e11")


@dataclass(frozen=True)
class Connection:
    """Twilio's webhook connection settings: retries (`rc`) on which failures (`rp`: ct,
    rt, 4xx, 5xx), connect (`ct`), read (`rt`) and total (`tt`) timeouts in seconds."""

    retries: int
    policy: frozenset[str]
    connect_s: float
    read_s: float
    total_s: float


# Twilio's accepted range (ms) of each timeout override; a value outside it is ignored.
_TIMEOUT_RANGES = {"ct": (100, 10000), "rt": (100, 15000), "tt": (100, 15000)}


def connection(config: SimulatorConfig, url: str) -> tuple[str, Connection]:
    """The URL to request (its fragment removed) and its connection settings: the
    configured defaults, overridden by the fragment (`#rc=3&rp=ct,5xx&rt=2000`) the way
    Twilio's webhook connection overrides are. Unknown or out-of-range values are ignored."""
    base, _, fragment = url.partition("#")
    overrides = dict(parse_qsl(fragment))
    timeouts = {
        "ct": config.callback_connect_timeout_ms,
        "rt": config.callback_timeout_ms,
        "tt": config.callback_total_timeout_ms,
    }
    for key, (low, high) in _TIMEOUT_RANGES.items():
        value = overrides.get(key, "")
        if value.isdigit() and low <= int(value) <= high:
            timeouts[key] = int(value)
    retries = config.callback_retry_count
    if overrides.get("rc", "").isdigit() and int(overrides["rc"]) <= MAX_RETRY_COUNT:
        retries = int(overrides["rc"])
    policy = parse_retry_policy(overrides.get("rp", "")) or parse_retry_policy(
        config.callback_retry_policy
    )
    assert policy is not None  # the config was validated
    settings = Connection(
        retries, policy, timeouts["ct"] / 1000, timeouts["rt"] / 1000, timeouts["tt"] / 1000
    )
    return base, settings


@dataclass(frozen=True)
class CallbackEvent:
    """One status change to report; its token is the same on every retry and duplicate."""

    url: str
    params: dict[str, str]
    token: str
    message_sid: str
    status: str
    connection: Connection


@dataclass(frozen=True)
class WebhookAnswer:
    status: int
    body: str
    content_type: str


def sign(auth_token: str, url: str, params: dict[str, str]) -> str:
    """Twilio's X-Twilio-Signature over the exact URL (query included) and the form."""
    return str(RequestValidator(auth_token).compute_signature(url, params))


class CallbackDispatcher:
    """Runs each message's lifecycle as a task; `cancel_all` stops them (reset, shutdown)."""

    def __init__(self, store: Store, session: aiohttp.ClientSession) -> None:
        self._store = store
        self._session = session
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, message: Message) -> None:
        self._spawn(self._lifecycle(message))

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def post_signed(self, url: str, params: dict[str, str], token: str) -> WebhookAnswer:
        """POST a signed form once (inbound SMS); raise aiohttp.ClientError or TimeoutError."""
        url, settings = connection(self._store.config, url)
        async with self._session.post(
            url,
            data=params,
            headers=self._headers(url, params, token),
            timeout=_timeout(settings, settings.total_s),
        ) as response:
            body = await response.text()
            return WebhookAnswer(response.status, body, response.content_type)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _lifecycle(self, message: Message) -> None:
        config = self._store.config
        # Queued (no date_sent) until the sender's queue lets it go; no callback for `sending`.
        await asyncio.sleep(max(0.0, message.release_at - time.monotonic()))
        self._advance(message, "sending", None)
        code = config.fail_numbers.get(message.to)
        if code is None:
            steps: list[tuple[str, int | None]] = [("sent", None), ("delivered", None)]
        elif code in FAILED_CODES:
            steps = [("failed", code)]
        else:
            steps = [("sent", None), ("undelivered", code)]
        previous: asyncio.Task[None] | None = None
        held: list[CallbackEvent] = []
        for status, error_code in steps:
            await asyncio.sleep(config.callback_delay_ms / 1000)
            self._advance(message, status, error_code)
            if not message.status_callback:
                continue
            if config.reorder_callbacks:
                held.append(self._event(message))
            else:
                previous = self._dispatch(self._event(message), previous)
        for event in reversed(held):
            previous = self._dispatch(event, previous)

    def _dispatch(
        self, event: CallbackEvent, previous: asyncio.Task[None] | None
    ) -> asyncio.Task[None] | None:
        """Queue an event behind the message's previous one; maybe drop or duplicate it."""
        rng = self._store.callback_rng
        if rng.random() < self._store.config.drop_callbacks:
            self._record(event, attempt=0, duplicate=False, status=None, error="dropped")
            return previous
        copies = 2 if rng.random() < self._store.config.duplicate_callbacks else 1
        for copy in range(copies):
            previous = self._spawn(self._deliver_after(previous, event, duplicate=copy > 0))
        return previous

    def _advance(self, message: Message, status: str, error_code: int | None) -> None:
        now = self._store.now()
        message.status = status
        message.date_updated = now
        if status == "sent":
            message.date_sent = now
            message.price = "-0.00790"
            if message.from_ is None:
                message.from_ = SERVICE_SENDER
        if error_code is not None:
            message.error_code = error_code
            message.error_message = DELIVERY_ERROR_MESSAGES.get(error_code, "Delivery failed")

    def _event(self, message: Message) -> CallbackEvent:
        assert message.status_callback is not None
        params = {
            "AccountSid": message.account_sid,
            "ApiVersion": API_VERSION,
            "From": message.from_ or SERVICE_SENDER,
            "MessageSid": message.sid,
            "MessageStatus": message.status,
            "SmsSid": message.sid,
            "SmsStatus": message.status,
            "To": message.to,
        }
        if message.messaging_service_sid:
            params["MessagingServiceSid"] = message.messaging_service_sid
        if message.error_code is not None:
            params["ErrorCode"] = str(message.error_code)
        if message.status in {"delivered", "undelivered"}:
            params["RawDlrDoneDate"] = message.date_updated.strftime("%y%m%d%H%M")
        token = str(uuid.uuid5(_TOKEN_NAMESPACE, f"{message.sid}:{message.status}"))
        url, settings = connection(self._store.config, message.status_callback)
        return CallbackEvent(url, params, token, message.sid, message.status, settings)

    async def _deliver_after(
        self, previous: asyncio.Task[None] | None, event: CallbackEvent, *, duplicate: bool
    ) -> None:
        # One message's callbacks go out one after the other, retries included.
        if previous is not None:
            await asyncio.wait([previous])
        await self._deliver(event, duplicate=duplicate)

    async def _deliver(self, event: CallbackEvent, *, duplicate: bool) -> None:
        """POST the event; retry only the failures its connection's policy names, as Twilio
        does (by default one retry, on a connect failure or connect timeout)."""
        settings = event.connection
        headers = self._headers(event.url, event.params, event.token)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.total_s
        for attempt in range(1, settings.retries + 2):
            status: int | None = None
            error: str | None = None
            failure: str | None = None
            try:
                async with self._session.post(
                    event.url,
                    data=event.params,
                    headers=headers,
                    timeout=_timeout(settings, deadline - loop.time()),
                ) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = type(exc).__name__
                failure = _failure_class(exc)
            else:
                failure = "5xx" if status >= 500 else "4xx" if status >= 400 else None
            self._record(
                event,
                attempt=attempt,
                duplicate=duplicate,
                status=status,
                error=error,
                failure=failure,
            )
            log.debug(
                "status callback %s for %s, attempt %d: %s",
                event.status,
                event.message_sid,
                attempt,
                status if status is not None else error,
            )
            if failure is None or failure not in settings.policy or attempt > settings.retries:
                return
            backoff = self._store.config.callback_retry_backoff_ms / 1000 * 2 ** (attempt - 1)
            if loop.time() + backoff >= deadline:
                return  # the total time (`tt`) is used up
            await asyncio.sleep(backoff)

    def _record(
        self,
        event: CallbackEvent,
        *,
        attempt: int,
        duplicate: bool,
        status: int | None,
        error: str | None,
        failure: str | None = None,
    ) -> None:
        self._store.callbacks.append(
            {
                "time": iso8601_ms(self._store.now()),
                "url": event.url,
                "params": event.params,
                "message_sid": event.message_sid,
                "message_status": event.status,
                "idempotency_token": event.token,
                "attempt": attempt,
                "duplicate": duplicate,
                "dropped": error == "dropped",
                "status": status,
                "error": error,
                # Twilio's retry policy class of a failed attempt: ct, rt, 4xx or 5xx.
                "failure": failure,
            }
        )

    def _headers(self, url: str, params: dict[str, str], token: str) -> dict[str, str]:
        return {
            SIGNATURE_HEADER: sign(self._store.config.auth_token, url, params),
            IDEMPOTENCY_HEADER: token,
            "User-Agent": USER_AGENT,
        }


def _timeout(settings: Connection, remaining_s: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=max(remaining_s, 0.001), sock_connect=settings.connect_s, sock_read=settings.read_s
    )


def _failure_class(exc: BaseException) -> str:
    """`ct` when no connection was made (refused, unreachable, connect timeout), else `rt`."""
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return "ct"
    return "rt"


DISPATCHER = web.AppKey("simulator_dispatcher", CallbackDispatcher)
