"""The Twilio SDK's client, made with explicit credentials, and its errors translated."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from sms_relay.domain.twilio_codes import Fault, fault_of
from sms_relay.errors import (
    ConfigurationError,
    ProviderAccountError,
    ProviderError,
    ProviderRejectedError,
    ProviderThrottledError,
    ProviderUnavailableError,
)
from sms_relay.settings import TwilioSettings


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
