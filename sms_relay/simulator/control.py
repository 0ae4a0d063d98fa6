"""The `/_simulator/*` control API: logs, reset, scripts, OTP codes, inbound SMS, settings."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import aiohttp
from aiohttp import web

from .lifecycle import DISPATCHER
from .store import SCRIPTABLE, STORE, iso8601_ms
from .webhook_client import WEBHOOKS
from .wire import API_VERSION, DEFAULT_INBOUND_TO, num_segments


def add_routes(app: web.Application) -> None:
    app.router.add_get("/_simulator/health", health)
    app.router.add_get("/_simulator/messages", messages)
    app.router.add_get("/_simulator/callbacks", callbacks)
    app.router.add_get("/_simulator/lists", lists)
    app.router.add_get("/_simulator/verifications", verification)
    app.router.add_post("/_simulator/reset", reset)
    app.router.add_post("/_simulator/script", script)
    app.router.add_post("/_simulator/inbound", inbound)
    app.router.add_get("/_simulator/config", get_config)
    app.router.add_post("/_simulator/config", set_config)
    app.router.add_post("/_simulator/clock", advance_clock)


async def health(request: web.Request) -> web.Response:
    store = request.app[STORE]
    return web.json_response(
        {"status": "ok", "simulator": True, "account_sid": store.config.account_sid}
    )


async def messages(request: web.Request) -> web.Response:
    return web.json_response({"messages": request.app[STORE].request_log()})


async def callbacks(request: web.Request) -> web.Response:
    return web.json_response({"callbacks": request.app[STORE].callbacks})


async def lists(request: web.Request) -> web.Response:
    return web.json_response({"lists": request.app[STORE].list_requests})


async def verification(request: web.Request) -> web.Response:
    to = request.query.get("to", "")
    if not to:
        return _bad("query parameter 'to' is required")
    found = request.app[STORE].latest_verification(to)
    if found is None:
        return web.json_response({"error": "no verification for this number"}, status=404)
    return web.json_response(
        {
            "to": found.to,
            "sid": found.sid,
            "service_sid": found.service_sid,
            "channel": found.channel,
            "code": found.code,
            "status": found.status,
            "checks": found.checks,
        }
    )


async def reset(request: web.Request) -> web.Response:
    await request.app[DISPATCHER].cancel_all()
    request.app[STORE].reset()
    return web.json_response({"status": "reset"})


async def script(request: web.Request) -> web.Response:
    data = await _json(request)
    to = data.get("to")
    outcomes = data.get("outcomes")
    on = data.get("on", "create")
    if not isinstance(to, str) or not to:
        return _bad("'to' must be a phone number")
    if on not in SCRIPTABLE:
        return _bad(f"'on' must be one of {sorted(SCRIPTABLE)}")
    allowed = SCRIPTABLE[on]
    if not isinstance(outcomes, list) or not all(o in allowed for o in outcomes):
        return _bad(f"'outcomes' of a {on} must be a list of {sorted(allowed)}")
    request.app[STORE].set_script(to, [str(o) for o in outcomes], on)
    return web.json_response({"to": to, "outcomes": outcomes, "on": on})


async def inbound(request: web.Request) -> web.Response:
    """Deliver a signed inbound SMS to the app, answer with what the app answered."""
    store = request.app[STORE]
    data = await _json(request)
    sender = data.get("from")
    to = data.get("to") or DEFAULT_INBOUND_TO
    body = data.get("body", "")
    url = data.get("url") or store.config.inbound_url
    if not isinstance(sender, str) or not sender:
        return _bad("'from' must be a phone number")
    if not isinstance(url, str) or not url:
        return _bad("no 'url' given and no inbound_url configured")
    if not isinstance(to, str) or not isinstance(body, str):
        return _bad("'to' and 'body' must be strings")
    service = data.get("messaging_service_sid")
    service = service if isinstance(service, str) and service else None
    sid = store.receive_message(sender, to, body, service).sid
    params = {
        "AccountSid": store.config.account_sid,
        "ApiVersion": API_VERSION,
        "Body": body,
        "From": sender,
        "MessageSid": sid,
        "NumMedia": "0",
        "NumSegments": str(num_segments(body)),
        "SmsMessageSid": sid,
        "SmsSid": sid,
        "SmsStatus": "received",
        "To": to,
    }
    if service:
        params["MessagingServiceSid"] = service
    try:
        answer = await request.app[WEBHOOKS].post_signed(url, params, str(uuid.uuid4()))
    except (aiohttp.ClientError, TimeoutError) as exc:
        return web.json_response({"error": type(exc).__name__, "message_sid": sid}, status=502)
    return web.json_response(
        {
            "status": answer.status,
            "body": answer.body,
            "content_type": answer.content_type,
            "message_sid": sid,
        }
    )


async def get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[STORE].config.public_dict())


async def set_config(request: web.Request) -> web.Response:
    config = request.app[STORE].config
    try:
        config.apply(await _json(request))
    except ValueError as exc:
        return _bad(str(exc))
    return web.json_response(config.public_dict())


async def advance_clock(request: web.Request) -> web.Response:
    """Shift the simulator's clock forward (Verify expiry and send windows), never back."""
    store = request.app[STORE]
    seconds = (await _json(request)).get("advance_seconds")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        return _bad("'advance_seconds' must be a non-negative number")
    store.clock_offset += timedelta(seconds=seconds)
    return web.json_response({"now": iso8601_ms(store.now())})


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except json.JSONDecodeError:
        raise web.HTTPBadRequest(
            text='{"error": "the body must be a JSON object"}', content_type="application/json"
        ) from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(
            text='{"error": "the body must be a JSON object"}', content_type="application/json"
        )
    return data


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)
