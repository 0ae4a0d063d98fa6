"""Posts signed webhooks as Twilio does (connection overrides, retry policy); logs each try."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from .config import MAX_RETRY_COUNT, SimulatorConfig, parse_retry_policy
from .store import Store, iso8601_ms
from .wire import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, USER_AGENT

log = logging.getLogger(__name__)


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


class WebhookClient:
    """Signs and POSTs webhooks; records every status callback attempt in the store."""

    def __init__(self, store: Store, session: aiohttp.ClientSession) -> None:
        self._store = store
        self._session = session

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

    async def deliver(self, event: CallbackEvent, *, duplicate: bool) -> None:
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

    def record_dropped(self, event: CallbackEvent) -> None:
        """Log a callback the simulator chose never to send."""
        self._record(event, attempt=0, duplicate=False, status=None, error="dropped")

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


WEBHOOKS = web.AppKey("simulator_webhooks", WebhookClient)
