"""Twilio's Messages API as the delivery core and the callbacks service use it: send,
list (to find a message whose create went unanswered) and fetch."""

from __future__ import annotations

import json
from datetime import datetime
from urllib.parse import quote_plus, urlencode

import aiohttp
from twilio.base.version import Version
from twilio.http.response import Response
from twilio.rest import Client

from sms_relay.adapters.twilio.twilio_client import provider_call
from sms_relay.delivery.delivery_ports import ListedMessage, ListedPage, SentMessage
from sms_relay.errors import ConfigurationError, ProviderUnavailableError
from sms_relay.masking import body_hash
from sms_relay.settings import TwilioSettings
from sms_relay.status.status_ports import FetchedMessage

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

    async def send(
        self, to: str, body: str, status_callback: str | None, validity_seconds: int | None = None
    ) -> SentMessage:
        """`validity_seconds`: Twilio's ValidityPeriod, the SDK's `validity_period` (None:
        Twilio's default). Raises ProviderRejectedError, ProviderThrottledError or
        ProviderUnavailableError."""
        form = f"To={quote_plus(to)}&Body={quote_plus(body)}&{self._sender}"
        if status_callback:
            form += f"&StatusCallback={quote_plus(status_callback)}"
        if validity_seconds is not None:
            form += f"&ValidityPeriod={validity_seconds}"
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
