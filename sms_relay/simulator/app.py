"""Composition root of the simulator: routes, auth and latency middleware, callback client."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

from . import control, message_create, message_reads, message_update
from . import verify_api as verify
from .config import SimulatorConfig
from .faults import CLOSING, DROPPED
from .lifecycle import DISPATCHER, CallbackDispatcher
from .store import STORE, Store
from .webhook_client import WEBHOOKS, WebhookClient
from .wire import API_VERSION, error_response, not_found

_ACCOUNT = f"/{API_VERSION}/Accounts/{{AccountSid}}"


def create_simulator_app(config: SimulatorConfig) -> web.Application:
    """The simulator as an aiohttp application; raises ValueError on a bad config."""
    config.validate()
    app = web.Application(middlewares=[_twilio_api])
    app[STORE] = Store(config)
    app[CLOSING] = asyncio.Event()
    app.cleanup_ctx.append(_callback_client)
    app.on_shutdown.append(_release_held_requests)
    app.router.add_post(f"{_ACCOUNT}/Messages.json", message_create.create_message)
    app.router.add_get(f"{_ACCOUNT}/Messages.json", message_reads.list_messages)
    app.router.add_get(f"{_ACCOUNT}/Messages/{{MessageSid}}.json", message_reads.fetch_message)
    app.router.add_post(f"{_ACCOUNT}/Messages/{{MessageSid}}.json", message_update.update_message)
    app.router.add_post("/v2/Services/{ServiceSid}/Verifications", verify.start_verification)
    app.router.add_post("/v2/Services/{ServiceSid}/VerificationCheck", verify.check_verification)
    control.add_routes(app)
    return app


class PrivacyAccessLogger(AbstractAccessLogger):
    """Logs method, path (never the query: it may hold phone numbers), status and time."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        status = "dropped" if request.get(DROPPED) else response.status
        self.logger.info("%s %s %s %.1fms", request.method, request.path, status, time * 1000)


@web.middleware
async def _twilio_api(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Basic auth, account check and latency for the Twilio routes; none for /_simulator."""
    if request.path.startswith("/_simulator/"):
        return await handler(request)
    store = request.app[STORE]
    if not _authorized(request, store):
        return error_response(401, 20003)
    account_sid = request.match_info.get("AccountSid")
    if account_sid is not None and account_sid != store.config.account_sid:
        return not_found(request.path)
    await _latency(store)
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return not_found(request.path)
    except web.HTTPMethodNotAllowed:
        return error_response(405, 20004, "Method not allowed")


def _authorized(request: web.Request, store: Store) -> bool:
    header = request.headers.get("Authorization", "")
    try:
        auth = aiohttp.BasicAuth.decode(header)
    except ValueError:
        return False
    sid_ok = hmac.compare_digest(auth.login.encode(), store.config.account_sid.encode())
    token_ok = hmac.compare_digest(auth.password.encode(), store.config.auth_token.encode())
    return sid_ok and token_ok


async def _latency(store: Store) -> None:
    config = store.config
    jitter = config.latency_jitter_ms
    delay_ms = config.latency_ms + (store.latency_rng.uniform(-jitter, jitter) if jitter else 0)
    if delay_ms > 0:
        await asyncio.sleep(delay_ms / 1000)


async def _callback_client(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as session:
        webhooks = WebhookClient(app[STORE], session)
        dispatcher = CallbackDispatcher(app[STORE], webhooks)
        app[WEBHOOKS] = webhooks
        app[DISPATCHER] = dispatcher
        yield
        await dispatcher.cancel_all()


async def _release_held_requests(app: web.Application) -> None:
    app[CLOSING].set()
