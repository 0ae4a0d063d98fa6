"""Verify v2: start a verification, check its code; Twilio's limits, expiry and answers."""

from __future__ import annotations

import hmac
import re
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from .store import STORE, Store, Verification
from .wire import error_message, error_response, is_e164, iso8601, mask_number, new_sid, not_found

CHANNELS = frozenset({"sms", "call", "email", "whatsapp", "sna", "auto", "rcs"})
PHONE_CHANNELS = frozenset({"sms", "call", "whatsapp", "sna", "rcs"})
MAX_CHECKS = 5
MAX_SENDS = 5
SEND_WINDOW = timedelta(minutes=10)
EXPIRY = timedelta(minutes=10)
_SERVICE_SID = re.compile(r"\AVA[0-9a-fA-F]{32}\Z")
_CUSTOM_CODE = re.compile(r"\A[0-9]{4,10}\Z")


async def start_verification(request: web.Request) -> web.Response:
    store = request.app[STORE]
    service_sid = request.match_info["ServiceSid"]
    if not _SERVICE_SID.match(service_sid):
        return not_found(request.path)
    form = await request.post()
    to = str(form.get("To", ""))
    channel = str(form.get("Channel", ""))
    custom_code = str(form.get("CustomCode", ""))
    invalid = _invalid_start_param(to, channel, custom_code)
    if invalid is not None:
        return _invalid(invalid)
    now = store.now()
    sends = [t for t in store.verify_sends.get((service_sid, to), []) if now - t < SEND_WINDOW]
    if len(sends) >= MAX_SENDS:
        store.verify_sends[(service_sid, to)] = sends
        return error_response(429, 60203)
    store.verify_sends[(service_sid, to)] = [*sends, now]
    verification = _pending(store, store.latest_verification(to, service_sid), now)
    if verification is None:
        verification = Verification(
            sid=new_sid("VE"),
            service_sid=service_sid,
            account_sid=store.config.account_sid,
            to=to,
            channel=channel,
            code=custom_code or store.new_code(),
            status="pending",
            date_created=now,
            date_updated=now,
        )
        store.verifications.append(verification)
    else:
        # Twilio sends the same code again while the verification is pending.
        verification.channel = channel
        verification.date_updated = now
    verification.sends.append((new_sid("VL"), channel, now))
    return web.json_response(_verification_json(request, verification), status=201)


async def check_verification(request: web.Request) -> web.Response:
    store = request.app[STORE]
    service_sid = request.match_info["ServiceSid"]
    if not _SERVICE_SID.match(service_sid):
        return not_found(request.path)
    form = await request.post()
    to = str(form.get("To", ""))
    verification_sid = str(form.get("VerificationSid", ""))
    code = str(form.get("Code", ""))
    if not code:
        return _invalid("Code")
    if not to and not verification_sid:
        return _invalid("To")
    now = store.now()
    if verification_sid:
        found = store.find_verification(verification_sid)
        if found is not None and found.service_sid != service_sid:
            found = None
    else:
        found = store.latest_verification(to, service_sid)
    verification = _pending(store, found, now)
    if verification is None:
        return not_found(request.path)
    verification.checks += 1
    verification.date_updated = now
    if verification.checks > MAX_CHECKS:
        # Exhausted: this answer is 60202, any later check finds nothing (20404).
        verification.status = "max_attempts_reached"
        return error_response(429, 60202)
    if hmac.compare_digest(code.encode(), verification.code.encode()):
        verification.status = "approved"
    return web.json_response(_check_json(verification))


def _pending(store: Store, verification: Verification | None, now: datetime) -> Verification | None:
    """The verification if it can still be checked; marks it expired when its time is up."""
    if verification is None or verification.status != "pending":
        return None
    if now - verification.date_created >= EXPIRY:
        verification.status = "expired"
        verification.date_updated = now
        return None
    return verification


def _invalid_start_param(to: str, channel: str, custom_code: str) -> str | None:
    if not to:
        return "To"
    if channel not in CHANNELS:
        return "Channel"
    if channel in PHONE_CHANNELS and not is_e164(to):
        return f"To: {mask_number(to)}"
    if custom_code and not _CUSTOM_CODE.match(custom_code):
        return "CustomCode"
    return None


def _invalid(param: str) -> web.Response:
    return error_response(400, 60200, error_message(60200, param=param))


def _verification_json(request: web.Request, verification: Verification) -> dict[str, Any]:
    url = (
        f"{request.scheme}://{request.host}/v2/Services/{verification.service_sid}"
        f"/Verifications/{verification.sid}"
    )
    return {
        "sid": verification.sid,
        "service_sid": verification.service_sid,
        "account_sid": verification.account_sid,
        "to": verification.to,
        "channel": verification.channel,
        "status": verification.status,
        "valid": verification.status == "approved",
        "lookup": {"carrier": None},
        "amount": None,
        "payee": None,
        "send_code_attempts": [
            {"attempt_sid": sid, "channel": channel, "time": iso8601(moment)}
            for sid, channel, moment in verification.sends
        ],
        "date_created": iso8601(verification.date_created),
        "date_updated": iso8601(verification.date_updated),
        "sna": None,
        "url": url,
    }


def _check_json(verification: Verification) -> dict[str, Any]:
    return {
        "sid": verification.sid,
        "service_sid": verification.service_sid,
        "account_sid": verification.account_sid,
        "to": verification.to,
        "channel": verification.channel,
        "status": verification.status,
        "valid": verification.status == "approved",
        "amount": None,
        "payee": None,
        "date_created": iso8601(verification.date_created),
        "date_updated": iso8601(verification.date_updated),
        "sna_attempts_error_codes": [],
    }
