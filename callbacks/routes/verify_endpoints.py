"""POST /api/verify/start and /api/verify/check: JSON in, Twilio Verify behind, limits in front."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from callbacks.app_keys import SETTINGS, VERIFY
from callbacks.http import client_ip, invalid, json_error
from schemas.phone import E164Phone
from sms_relay.status.phone_verification import VerifyOutcome, VerifyResult


class VerifyStartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, frozen=True)

    phone: E164Phone


class VerifyCheckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, frozen=True)

    phone: E164Phone
    # pydantic compiles patterns with Rust's regex, where `$` is the very end of the text.
    code: str = Field(pattern=r"^[0-9]{4,10}$")


_LIMITED = {
    VerifyResult.RATE_LIMITED: ("rate_limited", "too many requests; retry after the delay"),
    VerifyResult.TOO_MANY_SENDS: (
        "too_many_sends",
        "too many codes sent to this number; wait before asking for another",
    ),
    VerifyResult.TOO_MANY_CHECKS: (
        "too_many_checks",
        "too many wrong codes; ask for a new code after the delay",
    ),
}


async def verify_start(request: web.Request) -> web.Response:
    try:
        body = VerifyStartRequest.model_validate_json(await request.read())
    except ValidationError as error:
        return invalid(error, "request body")
    hops = request.app[SETTINGS].trusted_proxy_hops
    outcome = await request.app[VERIFY].start(body.phone, client_ip(request, hops))
    if outcome.result is VerifyResult.PENDING:
        return web.json_response({"status": "pending"}, status=202)
    return _failure(outcome)


async def verify_check(request: web.Request) -> web.Response:
    try:
        body = VerifyCheckRequest.model_validate_json(await request.read())
    except ValidationError as error:
        return invalid(error, "request body")
    outcome = await request.app[VERIFY].check(body.phone, body.code)
    if outcome.result in (VerifyResult.APPROVED, VerifyResult.REJECTED):
        return web.json_response({"status": outcome.result.value})
    return _failure(outcome)


def _failure(outcome: VerifyOutcome) -> web.Response:
    if outcome.result in _LIMITED:
        error, message = _LIMITED[outcome.result]
        wait = outcome.retry_after_seconds or 1
        return json_error(
            429, error, message, headers={"Retry-After": str(wait)}, retryAfterSeconds=wait
        )
    if outcome.result is VerifyResult.NOT_CONFIGURED:
        return json_error(
            503, "verify_not_configured", "phone verification is not configured on this server"
        )
    return json_error(503, "unavailable", "phone verification is unavailable; retry later")
