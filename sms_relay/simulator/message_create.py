"""The Messages API's create: Twilio's validation and magic numbers, scripted and random
faults, then the message and its lifecycle."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from .faults import draw_fault, drop, hold
from .lifecycle import DISPATCHER
from .message_reads import message_json
from .scheduling import delivery_options, option_problems
from .store import OUTCOMES, STORE, Store
from .wire import (
    MAGIC_FROM_ERRORS,
    MAGIC_TO_ERRORS,
    error_message,
    error_response,
    is_e164,
    mask_number,
    num_segments,
)

log = logging.getLogger(__name__)

# Outcomes answered before any message exists.
_EARLY = frozenset({"429", "500", "503", "drop_before_create", "timeout", "html"})
_EARLY_ERRORS = {"429": (429, 20429), "500": (500, 20500), "503": (503, 20503)}
# What an egress proxy or captive portal in front of Twilio answers in its stead: a 200
# with its own HTML page. Nothing reached Twilio; the SDK fails to parse it (ValueError).
_PROXY_PAGE = "<html><head><title>Proxy</title></head><body>Access policy page</body></html>"
_ALPHANUMERIC_SENDER = re.compile(r"\A(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}\Z")
_SHORT_CODE = re.compile(r"\A[0-9]{5,6}\Z")


async def create_message(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE]
    form = await request.post()
    params = {key: str(form[key]) for key in form}
    entry = store.log_request(params)
    to = params.get("To", "")
    scripted = store.take_scripted(to) if to else None
    entry["source"] = "script" if scripted is not None else None
    if scripted in _EARLY:
        return await _answer_early(request, entry, scripted)
    invalid = _validate(params, store)
    if invalid is not None:
        code, text = invalid
        return _finish(entry, "rejected", error_response(400, code, text), code)
    fault = scripted
    if scripted is None:
        if not store.limiter.allow(store.config.max_mps):
            entry["source"] = "rate_limit"
            return _finish(entry, "429", error_response(429, 20429), 20429)
        fault = _random_fault(store)
        entry["source"] = "random" if fault != "ok" else None
        if fault in _EARLY:
            return await _answer_early(request, entry, fault)
    segments = num_segments(params.get("Body", ""))
    media = len(form.getall("MediaUrl", []))
    message = store.create_message(params, segments, media, delivery_options(params))
    request.app[DISPATCHER].start(message)
    entry.update(created=True, sid=message.sid)
    log.debug("created %s to %s", message.sid, mask_number(message.to))
    if fault == "500_after_create":
        return _finish(entry, fault, error_response(500, 20500), 20500)
    if fault in {"drop_after_create", "timeout_after_create"}:
        entry["outcome"] = fault
        if fault == "timeout_after_create":
            await hold(request)
        drop(request)
    return _finish(entry, "ok", web.json_response(message_json(message), status=201), None)


def _validate(params: dict[str, str], store: Store) -> tuple[int, str] | None:
    """The error code and text Twilio answers a bad create with, or None."""
    problem = next(_problems(params), None)
    if problem is None:
        code = next(option_problems(params, store.now()), None)
        problem = None if code is None else (code, error_message(code))
    return problem


def _problems(params: dict[str, str]) -> Iterator[tuple[int, str]]:
    to = params.get("To", "")
    sender = params.get("From", "")
    if not to:
        yield 21604, error_message(21604)
    if not sender and not params.get("MessagingServiceSid"):
        yield 21603, error_message(21603)
    if not params.get("Body") and not params.get("MediaUrl") and not params.get("ContentSid"):
        yield 21602, error_message(21602)
    if sender in MAGIC_FROM_ERRORS:
        code = MAGIC_FROM_ERRORS[sender]
        yield code, error_message(code, number=mask_number(sender))
    bare_sender = sender.removeprefix("whatsapp:")
    if sender and not (
        is_e164(bare_sender) or _SHORT_CODE.match(sender) or _ALPHANUMERIC_SENDER.match(sender)
    ):
        yield 21212, error_message(21212, number=mask_number(sender))
    if to in MAGIC_TO_ERRORS:
        code = MAGIC_TO_ERRORS[to]
        yield code, error_message(code, number=mask_number(to))
    if not is_e164(to.removeprefix("whatsapp:")):
        yield 21211, error_message(21211, number=mask_number(to))


def _random_fault(store: Store) -> str:
    config = store.config
    return draw_fault(
        store.fault_rng.random(),
        (
            ("429", config.rate_429),
            ("500", config.rate_500),
            ("503", config.rate_503),
            ("timeout", config.rate_timeout),
            ("500_after_create", config.rate_500_after_create),
            ("drop_after_create", config.rate_drop_after_create),
            ("timeout_after_create", config.rate_timeout_after_create),
        ),
    )


async def _answer_early(request: web.Request, entry: dict[str, Any], outcome: str) -> web.Response:
    assert outcome in OUTCOMES
    entry["outcome"] = outcome
    if outcome == "timeout":
        await hold(request)
        drop(request)
    if outcome == "drop_before_create":
        drop(request)
    if outcome == "html":
        page = web.Response(status=200, text=_PROXY_PAGE, content_type="text/html")
        return _finish(entry, outcome, page, None)
    status, code = _EARLY_ERRORS[outcome]
    return _finish(entry, outcome, error_response(status, code), code)


def _finish(
    entry: dict[str, Any], outcome: str, response: web.Response, code: int | None
) -> web.Response:
    entry.update(outcome=outcome, status=response.status, error_code=code)
    return response
