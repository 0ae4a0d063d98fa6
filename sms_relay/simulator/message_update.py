"""The Messages API's update, as far as Twilio documents it for scheduled messages: cancel
one with `Status=canceled` while it is still `scheduled` (else 30409)."""

from __future__ import annotations

from aiohttp import web

from .lifecycle import DISPATCHER
from .message_reads import message_json
from .store import STORE
from .wire import error_message, error_response, not_found


async def update_message(request: web.Request) -> web.Response:
    store = request.app[STORE]
    message = store.messages.get(request.match_info["MessageSid"])
    if message is None or message.direction != "outbound-api":
        return not_found(request.path)
    form = await request.post()
    status = str(form.get("Status", ""))
    if status != "canceled":
        # Redacting the body (Body="") is the other documented update; not simulated.
        return error_response(400, 20001, f"Invalid parameter: Status {status!r}")
    if message.status != "scheduled":
        return error_response(400, 30409, error_message(30409))
    request.app[DISPATCHER].cancel(message)
    return web.json_response(message_json(message), status=200)
