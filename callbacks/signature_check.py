"""X-Twilio-Signature on every `/twilio/*` webhook, checked before any handler runs.

Twilio signs the URL it called and the form it posted. Behind a TLS-terminating proxy
the app sees `http://10.0.0.5:8080/...`, not what Twilio called, so the URL is rebuilt
from PUBLIC_BASE_URL and the raw path and query string as received (no re-encoding). The
form goes to the SDK's RequestValidator as the MultiDict it is, so a field posted twice
is signed with both values, as Twilio does.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from callbacks.app_keys import METRICS, SETTINGS
from callbacks.http import json_error, read_form, route_name
from sms_relay.adapters.twilio.webhook_signature import webhook_signature_valid

log = logging.getLogger(__name__)

SIGNED_PREFIX = "/twilio/"
SIGNATURE_HEADER = "X-Twilio-Signature"
SIGNATURE_SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"


def public_url(public_base_url: str, request: web.BaseRequest) -> str:
    """The URL Twilio called: our public base, then the path and query exactly as sent."""
    return public_base_url.rstrip("/") + request.raw_path


@web.middleware
async def twilio_signature(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(SIGNED_PREFIX):
        return await handler(request)
    settings = request.app[SETTINGS]
    if not settings.require_twilio_signature:
        return await handler(request)
    form = await read_form(request)  # 413, 415 or 400 before any signature check
    valid = webhook_signature_valid(
        settings.twilio.auth_token.get_secret_value(),
        public_url(str(settings.public_base_url), request),
        form,
        request.headers.get(SIGNATURE_HEADER, ""),
        request.headers.get(SIGNATURE_SETTINGS_HEADER),
    )
    if not valid:
        request.app[METRICS].signature_failures.labels(route_name(request)).inc()
        log.warning("webhook signature refused", extra={"path": request.path})
        return json_error(403, "invalid_signature", "X-Twilio-Signature does not match")
    return await handler(request)
