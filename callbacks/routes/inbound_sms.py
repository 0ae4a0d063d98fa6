"""POST /twilio/inbound: opt-out and opt-in keywords, HELP; answers TwiML.

A keyword takes effect once per inbound MessageSid, and only in Twilio's order of
receipt (see `sms_relay.status.opt_out`). Twilio's `date_created` is fetched for opt-outs
and opt-ins. Without it, an opt-out still applies at once, stamped with our own clock:
stopping is always safe. An opt-in is not applied on a guess: Twilio unreachable → 503
(Twilio may retry), a message Twilio does not know (404: not a real inbound SMS) →
acknowledged and ignored.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from xml.sax.saxutils import escape

from aiohttp import web
from pydantic import ValidationError

from callbacks.app_keys import METRICS, RECEIVED_AT, SETTINGS, SUPPRESSIONS
from callbacks.http import invalid, json_error, read_form
from schemas.twilio import TwilioInboundMessage
from sms_relay.errors import DatabaseUnavailableError, ProviderError, ProviderRejectedError
from sms_relay.masking import mask_phone
from sms_relay.status.opt_out import Keyword, KeywordResult, classify

log = logging.getLogger(__name__)

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def twiml_message(text: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Message>{escape(text)}</Message></Response>"
    )


async def inbound_message(request: web.Request) -> web.Response:
    form = await read_form(request)
    try:
        message = TwilioInboundMessage.model_validate({k: form[k] for k in form})
    except ValidationError as error:
        return invalid(error, "inbound message form")
    keyword = classify(message.Body)
    request.app[METRICS].inbound.labels(keyword.value).inc()
    if keyword is Keyword.OTHER:
        return _twiml(EMPTY_TWIML)
    received_at = await _receipt_time(request, message.MessageSid, keyword)
    if isinstance(received_at, web.Response):
        return received_at
    try:
        result = await request.app[SUPPRESSIONS].apply_keyword(
            message.From, keyword, message.MessageSid, received_at or datetime.now(UTC)
        )
    except DatabaseUnavailableError as error:
        # Twilio retries a failed inbound webhook a little; the opt-out must not be lost silently.
        log.error("opt-out/opt-in not stored", extra={"error": repr(error)})
        return json_error(503, "unavailable", "the keyword could not be stored; retry later")
    log.info(
        "inbound keyword",
        extra={"action": keyword.value, "result": result.value, "from": mask_phone(message.From)},
    )
    if keyword is Keyword.HELP and result is KeywordResult.APPLIED:
        return _twiml(twiml_message(request.app[SETTINGS].callbacks_help_text))
    return _twiml(EMPTY_TWIML)  # a repeated HELP gets no second answer


async def _receipt_time(
    request: web.Request, sid: str, keyword: Keyword
) -> datetime | web.Response | None:
    """Twilio's receipt time; None when an opt-out or HELP goes on without it; the answer
    when an opt-in cannot."""
    if keyword is Keyword.HELP:
        return None
    try:
        return await request.app[RECEIVED_AT](sid)
    except ProviderError as error:
        log.warning(
            "inbound message time unavailable",
            extra={"status": error.status, "code": error.code, "action": keyword.value},
        )
        if keyword is Keyword.OPT_OUT:
            return None
        if isinstance(error, ProviderRejectedError):
            return _twiml(EMPTY_TWIML)  # Twilio never received it: nothing to apply
        return json_error(503, "unavailable", "the keyword could not be ordered; retry later")


def _twiml(body: str) -> web.Response:
    return web.Response(text=body, content_type="text/xml")
