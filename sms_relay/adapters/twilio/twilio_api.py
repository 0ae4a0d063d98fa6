"""Twilio: the one place the SDK is configured and its exceptions are translated."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from urllib.parse import quote_plus, urlencode

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.base.version import Version
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator, get_signature_algorithm
from twilio.rest import Client

from sms_relay.delivery.ports import ListedMessage, ListedPage, SentMessage
from sms_relay.domain.twilio_codes import Fault, fault_of
from sms_relay.errors import (
    ConfigurationError,
    ProviderAccountError,
    ProviderError,
    ProviderRejectedError,
    ProviderThrottledError,
    ProviderUnavailableError,
)
from sms_relay.masking import body_hash
from sms_relay.settings import TwilioSettings
from sms_relay.status.ports import FetchedMessage


class HeaderAuthHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # untyped SDK
    """The SDK's async HTTP client, sending credentials as a header, without a cap on
    connections.

    twilio 9.13 passes `aiohttp.BasicAuth`, which aiohttp 3.14 deprecates; the header
    it sends is the same. The SDK's session keeps aiohttp's default of 100 connections,
    which would hold SMS_CONCURRENCY above 100 to 100 requests in flight; the callers'
    own semaphores bound the concurrency instead. Must be made inside a running loop.
    """

    def __init__(self) -> None:
        super().__init__(pool_connections=False, max_retries=None)
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Any:
        if auth is not None:
            headers = {**(headers or {}), "Authorization": aiohttp.encode_basic_auth(*auth)}
        return await super().request(
            method, url, params, data, headers, None, timeout, allow_redirects
        )


def create_client(settings: TwilioSettings) -> Client:
    """An async-capable Client with explicit credentials and our base URLs.

    Credentials are always passed: the SDK would otherwise read TWILIO_* itself. The
    SDK's own retries stay off (max_retries=None): they resend POSTs on 5xx.
    Must be called inside a running event loop (the HTTP session binds to it).
    """
    if not settings.configured:
        raise ConfigurationError("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are required")
    client = Client(
        settings.account_sid,
        settings.auth_token.get_secret_value(),
        http_client=HeaderAuthHttpClient(),
    )
    client.api.base_url = str(settings.api_base_url).rstrip("/")
    client.verify.base_url = str(settings.verify_base_url).rstrip("/")
    return client


async def close_client(client: Client) -> None:
    await client.http_client.close()


def _translate(error: BaseException) -> ProviderError:
    """Library exceptions to ours. Only a 429 is known never to have been processed."""
    if isinstance(error, TwilioRestException):
        if error.status == 429:
            return ProviderThrottledError("twilio throttled", code=error.code, status=429)
        if error.status >= 500:
            return ProviderUnavailableError(
                f"twilio {error.status}", code=error.code, status=error.status
            )
        if fault_of(error.status, error.code) is Fault.ACCOUNT:
            return ProviderAccountError(
                f"twilio {error.status}", code=error.code, status=error.status
            )
        return ProviderRejectedError(f"twilio {error.status}", code=error.code, status=error.status)
    if isinstance(error, TimeoutError):
        return ProviderUnavailableError("twilio timeout")
    # aiohttp errors, dropped connections, TwilioServiceException and friends.
    return ProviderUnavailableError(f"twilio unreachable: {type(error).__name__}")


@asynccontextmanager
async def provider_call(deadline_seconds: float) -> AsyncIterator[None]:
    """Enforce our own deadline (the async client ignores its timeout) and translate errors."""
    try:
        async with asyncio.timeout(deadline_seconds):
            yield
    except (TwilioException, aiohttp.ClientError, TimeoutError, OSError) as error:
        raise _translate(error) from None


LIST_PAGE_SIZE = 100


class TwilioSmsSender:
    """Sends one SMS per call and finds earlier ones when a send's outcome is unknown.

    `send` posts the create itself on the SDK's HTTP session: the SDK's layers around
    that one request (parameter mapping, a MessageInstance with parsed dates, request and
    response logging) cost about as much CPU as the request (BENCHMARKS.md). It keeps
    what the SDK's create does: the same URL under TWILIO_API_BASE_URL, basic auth with
    the account SID and auth token, the SDK's headers (User-Agent, X-Twilio-Client,
    Accept), the same form fields, no retries (they are off in the SDK too), and the
    SDK's own exception for an error answer (`Version.exception`: TwilioRestException
    with Twilio's code, or TwilioServiceException), translated like any SDK call.
    """

    def __init__(self, client: Client, settings: TwilioSettings) -> None:
        if not (settings.from_number or settings.messaging_service_sid):
            raise ConfigurationError(
                "TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID is required to send"
            )
        self._client = client
        self._settings = settings
        sender = settings.messaging_service_sid
        fields = {"MessagingServiceSid": sender} if sender else {"From": settings.from_number}
        self._sender = urlencode(fields)  # the same for every send: encoded once
        base = str(settings.api_base_url).rstrip("/")
        self._create_url = f"{base}/2010-04-01/Accounts/{settings.account_sid}/Messages.json"
        auth = aiohttp.encode_basic_auth(
            settings.account_sid, settings.auth_token.get_secret_value()
        )
        self._headers = {**client.get_headers("POST", None), "Authorization": auth}

    async def send(self, to: str, body: str, status_callback: str | None) -> SentMessage:
        """Raises ProviderRejectedError, ProviderThrottledError or ProviderUnavailableError."""
        form = f"To={quote_plus(to)}&Body={quote_plus(body)}&{self._sender}"
        if status_callback:
            form += f"&StatusCallback={quote_plus(status_callback)}"
        session: aiohttp.ClientSession = self._client.http_client.session
        async with provider_call(self._settings.request_timeout_seconds):
            async with session.post(self._create_url, data=form, headers=self._headers) as response:
                text = await response.text()
            if not 200 <= response.status < 300:
                answer = Response(response.status, text, response.headers)
                raise Version.exception("POST", self._create_url, answer, "Unable to create record")
        message = json.loads(text)
        return SentMessage(sid=str(message["sid"]), status=str(message["status"]))

    async def list_page(self, to: str, page: str | None) -> ListedPage:
        """One page of the messages to `to` (from our sender when it is a number), newest
        first; `page` is the URL of the next page, None for the first.

        Never filtered by DateSent: a message still in the sender's queue has no
        `date_sent`, and those are the ones most likely in doubt. Raises ProviderError.
        """
        messages = self._client.messages
        async with provider_call(self._settings.request_timeout_seconds):
            if page is None:
                sender = {"from_": self._settings.from_number} if self._settings.from_number else {}
                result = await messages.page_async(to=to, page_size=LIST_PAGE_SIZE, **sender)
            else:
                result = await messages.get_page_async(page)
        listed = [
            ListedMessage(
                sid=str(m.sid),
                body_hash=body_hash(m.body) if m.body is not None else None,
                created_at=m.date_created,
                sent_at=m.date_sent,
            )
            for m in result
        ]
        return ListedPage(listed, result.next_page_url)


def webhook_signature_valid(
    auth_token: str,
    url: str,
    params: object,
    signature: str,
    signature_settings: str | None = None,
) -> bool:
    """Twilio's X-Twilio-Signature check, by the SDK's own RequestValidator.

    `params` is the form as posted, multi-valued fields included: pass a MultiDict (it
    has `getall`), not a dict of first values. `signature_settings` is the
    X-Twilio-Webhooks-Signature-Settings header, which names the HMAC algorithm.
    """
    if not signature:
        return False
    algorithm = get_signature_algorithm(signature_settings)
    return bool(RequestValidator(auth_token).validate(url, params, signature, algorithm))


async def fetch_message(client: Client, settings: TwilioSettings, sid: str) -> FetchedMessage:
    """A message's current status and error code (missing callbacks).

    Raises ProviderRejectedError (404: no such message) or ProviderUnavailableError.
    """
    async with provider_call(settings.request_timeout_seconds):
        message = await client.messages(sid).fetch_async()
    code = message.error_code
    return FetchedMessage(
        sid=str(message.sid), status=str(message.status), error_code=int(code) if code else None
    )


class TwilioVerifier:
    """Twilio Verify v2: send a code, check a code, through the SDK's async client."""

    def __init__(self, client: Client, settings: TwilioSettings) -> None:
        if not settings.verify_service_sid:
            raise ConfigurationError("TWILIO_VERIFY_SERVICE_SID is required for Verify")
        self._service = client.verify.v2.services(settings.verify_service_sid)
        self._timeout = settings.request_timeout_seconds

    async def start(self, to: str, channel: str = "sms") -> str:
        """Send (or resend) a code; returns the verification's status.

        Raises ProviderThrottledError (429, code 60203 when the number had too many sends),
        ProviderRejectedError or ProviderUnavailableError.
        """
        async with provider_call(self._timeout):
            verification = await self._service.verifications.create_async(to=to, channel=channel)
        return str(verification.status)

    async def check(self, to: str, code: str) -> bool:
        """True when the code is right. False when it is wrong or no verification is
        pending for `to` (Twilio's 404): the two look the same to the caller.

        Raises ProviderThrottledError (429, code 60202 after too many checks),
        ProviderRejectedError or ProviderUnavailableError.
        """
        try:
            async with provider_call(self._timeout):
                result = await self._service.verification_checks.create_async(to=to, code=code)
        except ProviderRejectedError as error:
            if error.status == 404:
                return False
            raise
        return str(result.status) == "approved"


async def message_created_at(client: Client, settings: TwilioSettings, sid: str) -> datetime:
    """When Twilio created message `sid`; for an inbound SMS, when Twilio received it.

    Raises ProviderRejectedError (404: no such message) or ProviderUnavailableError.
    """
    async with provider_call(settings.request_timeout_seconds):
        message = await client.messages(sid).fetch_async()
    created = message.date_created
    if not isinstance(created, datetime):
        raise ProviderUnavailableError("Twilio gave the message no date_created")
    return created
