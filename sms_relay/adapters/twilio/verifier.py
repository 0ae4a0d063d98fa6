"""Twilio Verify v2: send a one-time code and check it."""

from __future__ import annotations

from twilio.rest import Client

from sms_relay.adapters.twilio.twilio_client import provider_call
from sms_relay.errors import ConfigurationError, ProviderRejectedError
from sms_relay.settings import TwilioSettings


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
