"""POST /twilio/inbound: opt-out and opt-in keywords, HELP; answers TwiML."""

from __future__ import annotations

import logging
from xml.sax.saxutils import escape

from aiohttp import web
from pydantic import ValidationError

from callbacks.http import invalid, json_error
from callbacks.keys import METRICS, SETTINGS, SUPPRESSIONS
from schemas.twilio import TwilioInboundMessage
from sms_relay.masking import mask_phone
from sms_relay.outbox import DATABASE_ERRORS
from sms_relay.suppression import Keyword, classify

log = logging.getLogger(__name__)

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def twiml_message(text: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Message>{escape(text)}</Message></Response>"
    )


async def inbound_message(request: web.Request) -> web.Response:
    form = await request.post()
    try:
        message = TwilioInboundMessage.model_validate({k: form[k] for k in form})
    except ValidationError as error:
        return invalid(error, "inbound message form")
    keyword = classify(message.Body)
    request.app[METRICS].inbound.labels(keyword.value).inc()
    suppressions = request.app[SUPPRESSIONS]
    try:
        if keyword is Keyword.OPT_OUT:
            await suppressions.add(message.From, "opt_out")
        elif keyword is Keyword.OPT_IN:
            await suppressions.remove(message.From)
    except DATABASE_ERRORS as error:
        # Twilio retries a failed inbound webhook a little; the opt-out must not be lost silently.
        log.error("opt-out/opt-in not stored", extra={"error": repr(error)})
        return json_error(503, "unavailable", "the keyword could not be stored; retry later")
    if keyword is not Keyword.OTHER:
        log.info(
            "inbound keyword", extra={"action": keyword.value, "from": mask_phone(message.From)}
        )
    body = EMPTY_TWIML
    if keyword is Keyword.HELP:
        body = twiml_message(request.app[SETTINGS].callbacks_help_text)
    return web.Response(text=body, content_type="text/xml")
