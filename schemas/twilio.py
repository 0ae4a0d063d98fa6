"""Twilio's webhook forms, named for their source."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import Status

_TWILIO_STATUSES = {"accepted", "queued", "sending", "sent", "delivered", "undelivered"}
_TWILIO_STATUSES |= {"failed", "read", "canceled", "receiving", "received", "scheduled"}


class TwilioStatusCallback(BaseModel):
    """Form posted to our StatusCallback URL."""

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True, frozen=True)

    MessageSid: str = Field(pattern=r"^(SM|MM)[0-9a-f]{32}$")
    MessageStatus: str
    AccountSid: str = Field(pattern=r"^AC[0-9a-zA-Z]{32}$")
    To: str | None = None
    From: str | None = None
    ErrorCode: int | None = None

    def status(self) -> Status:
        return Status(self.MessageStatus)

    @classmethod
    def is_known_status(cls, value: str) -> bool:
        return value in _TWILIO_STATUSES and value in Status.__members__.values()


class TwilioInboundMessage(BaseModel):
    """Form posted to our inbound-message webhook."""

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True, frozen=True)

    MessageSid: str = Field(min_length=34, max_length=34)
    AccountSid: str
    From: str
    To: str
    Body: str = ""
