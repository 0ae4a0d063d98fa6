"""Moves created messages through sent -> delivered and queues their status callbacks."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from .store import Message, Store
from .webhook_client import CallbackEvent, WebhookClient, connection
from .wire import API_VERSION, DELIVERY_ERROR_MESSAGES, FAILED_CODES, SERVICE_SENDER

_TOKEN_NAMESPACE = uuid.UUID("6f1c3f0e-3b8a-4c57-9a57-5a7d1c0b7e11")
# How often a scheduled message looks at the (movable) clock and for a cancel.
_SCHEDULE_POLL_SECONDS = 0.05


class CallbackDispatcher:
    """Runs each message's lifecycle as a task; `cancel_all` stops them (reset, shutdown)."""

    def __init__(self, store: Store, webhooks: WebhookClient) -> None:
        self._store = store
        self._webhooks = webhooks
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, message: Message) -> None:
        self._spawn(self._lifecycle(message))

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _lifecycle(self, message: Message) -> None:
        config = self._store.config
        if message.status == "scheduled":
            if not await self._until_due(message):
                return  # canceled
            self._store.release(message)
        # Queued (no date_sent) until the sender's queue lets it go; no callback for `sending`.
        # One that would outwait its validity period fails when that ends, never sent.
        leaves_queue = message.release_at if message.expires_at is None else message.expires_at
        await asyncio.sleep(max(0.0, leaves_queue - time.monotonic()))
        code = config.fail_numbers.get(message.to)
        if message.expires_at is not None:
            code = 30036
        else:
            self._advance(message, "sending", None)
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

    async def _until_due(self, message: Message) -> bool:
        """Wait for a scheduled message's SendAt on the simulator's clock (which
        `POST /_simulator/clock` moves on); False when it was canceled first."""
        assert message.send_at is not None
        while message.status == "scheduled":
            remaining = (message.send_at - self._store.now()).total_seconds()
            if remaining <= 0:
                return True
            await asyncio.sleep(min(remaining, _SCHEDULE_POLL_SECONDS))
        return False

    def cancel(self, message: Message) -> None:
        """A scheduled message is canceled: its lifecycle ends, a `canceled` callback goes."""
        self._advance(message, "canceled", None)
        if message.status_callback:
            self._dispatch(self._event(message), None)

    def _dispatch(
        self, event: CallbackEvent, previous: asyncio.Task[None] | None
    ) -> asyncio.Task[None] | None:
        """Queue an event behind the message's previous one; maybe drop or duplicate it."""
        rng = self._store.callback_rng
        if rng.random() < self._store.config.drop_callbacks:
            self._webhooks.record_dropped(event)
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
        await self._webhooks.deliver(event, duplicate=duplicate)


DISPATCHER = web.AppKey("simulator_dispatcher", CallbackDispatcher)
