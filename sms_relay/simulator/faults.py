"""How the Messages API misbehaves: a fault drawn by its rate, a request held past the
client's timeout, a connection closed without an answer."""

from __future__ import annotations

import asyncio
import contextlib
from typing import NoReturn

from aiohttp import web

from .store import STORE

CLOSING = web.AppKey("simulator_closing", asyncio.Event)
# Set on requests answered by closing the connection, for the access log.
DROPPED = web.RequestKey("simulator_dropped", bool)


def draw_fault(draw: float, outcomes: tuple[tuple[str, float], ...]) -> str:
    """The outcome whose share of [0, 1) holds `draw`; "ok" past them all."""
    for outcome, rate in outcomes:
        if draw < rate:
            return outcome
        draw -= rate
    return "ok"


async def hold(request: web.Request) -> None:
    """Keep the request open for `timeout_hold_s`, past the client's timeout (or shutdown)."""
    closing = request.app[CLOSING]
    seconds = request.app[STORE].config.timeout_hold_s
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(closing.wait(), seconds)


def drop(request: web.Request) -> NoReturn:
    """Close the connection without an answer, as a crashed proxy or a cut network would."""
    request[DROPPED] = True
    if request.transport is not None:
        request.transport.abort()
    raise web.HTTPServiceUnavailable()
