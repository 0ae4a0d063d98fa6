"""The application's dependencies, each under its own `web.AppKey` (set in `callbacks.app`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from sms_relay.adapters.kafka.producer import AsyncProducer
from sms_relay.adapters.postgres.engine import AsyncEngine
from sms_relay.kinds.event_kind import EventKind
from sms_relay.metrics import CallbackMetrics
from sms_relay.settings import Settings
from sms_relay.status.api_keys import ApiKeys
from sms_relay.status.opt_out import OptOutKeywords
from sms_relay.status.outbox import Outbox
from sms_relay.status.phone_verification import VerifyService

# Answers whether the broker is reachable (a metadata request), for /readyz.
KafkaProbe = Callable[[float], Awaitable[bool]]
# When Twilio received an inbound message (by its SID); raises ProviderRejectedError when
# Twilio does not know it, ProviderUnavailableError when Twilio cannot be asked.
ReceivedAt = Callable[[str], Awaitable[datetime]]

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", CallbackMetrics)
ENGINE = web.AppKey("engine", AsyncEngine)
PRODUCER = web.AppKey("producer", AsyncProducer)
KAFKA_PROBE: web.AppKey[KafkaProbe] = web.AppKey("kafka_probe")
OUTBOX = web.AppKey("outbox", Outbox)
SUPPRESSIONS = web.AppKey("suppressions", OptOutKeywords)
VERIFY = web.AppKey("verify", VerifyService)
API_KEYS = web.AppKey("api_keys", ApiKeys)
# Each served kind by name, with its topic, its policy and the destination policy.
KINDS: web.AppKey[dict[str, EventKind]] = web.AppKey("kinds")
RECEIVED_AT: web.AppKey[ReceivedAt] = web.AppKey("received_at")
# The twilio REST client, or None without credentials.
TWILIO_CLIENT: web.AppKey[Any] = web.AppKey("twilio_client")
