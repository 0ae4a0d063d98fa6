"""The Messages API: create (with magic numbers, scripts and faults), fetch and list."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from typing import Any, NoReturn
from urllib.parse import urlencode

from aiohttp import web

from .lifecycle import DISPATCHER
from .store import OUTCOMES, STORE, Message, Store, iso8601_ms
from .wire import (
    API_VERSION,
    MAGIC_FROM_ERRORS,
    MAGIC_TO_ERRORS,
    error_message,
    error_response,
    is_e164,
    mask_number,
    not_found,
    num_segments,
    rfc2822,
)

log = logging.getLogger(__name__)

CLOSING = web.AppKey("simulator_closing", asyncio.Event)
# Set on requests answered by closing the connection, for the access log.
DROPPED = web.RequestKey("simulator_dropped", bool)

# Outcomes answered before any message exists.
_EARLY = frozenset({"429", "500", "503", "drop_before_create", "timeout", "html"})
_EARLY_ERRORS = {"429": (429, 20429), "500": (500, 20500), "503": (503, 20503)}
# What an egress proxy or captive portal in front of Twilio answers in its stead: a 200
# with its own HTML page. Nothing reached Twilio; the SDK fails to parse it (ValueError).
_PROXY_PAGE = "<html><head><title>Proxy</title></head><body>Access policy page</body></html>"
_ALPHANUMERIC_SENDER = re.compile(r"\A(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}\Z")
_SHORT_CODE = re.compile(r"\A[0-9]{5,6}\Z")
# Twilio documents DateSent as a GMT day, YYYY-MM-DD; the SDK sends YYYY-MM-DDTHH:MM:SSZ.
_DATE_SENT = re.compile(
    r"\A(?P<day>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?)?\Z"
)
_DATE_SENT_FILTERS = {"DateSent": "==", "DateSent<": "<=", "DateSent>": ">="}
_LIST_ERRORS = {"429": (429, 20429), "500": (500, 20500), "503": (503, 20503)}


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
    invalid = _validate(params)
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
    message = store.create_message(
        params, num_segments(params.get("Body", "")), len(form.getall("MediaUrl", []))
    )
    request.app[DISPATCHER].start(message)
    entry.update(created=True, sid=message.sid)
    log.debug("created %s to %s", message.sid, mask_number(message.to))
    if fault == "500_after_create":
        return _finish(entry, fault, error_response(500, 20500), 20500)
    if fault in {"drop_after_create", "timeout_after_create"}:
        entry["outcome"] = fault
        if fault == "timeout_after_create":
            await _hold(request)
        _drop(request)
    return _finish(entry, "ok", web.json_response(message_json(message), status=201), None)


async def fetch_message(request: web.Request) -> web.Response:
    store = request.app[STORE]
    message = store.messages.get(request.match_info["MessageSid"])
    if message is None:
        return not_found(request.path)
    return web.json_response(message_json(message))


async def list_messages(request: web.Request) -> web.Response:
    store = request.app[STORE]
    query = request.query
    fault = await _list_fault(request)
    if fault is not None:
        return fault
    now = store.now()
    try:
        page_size = min(max(int(query.get("PageSize", "50")), 1), 1000)
        page = max(int(query.get("Page", "0")), 0)
        sent_filters = _date_sent_filters(query)
    except ValueError as exc:
        return error_response(400, 20001, str(exc))
    wanted = [
        m
        for m in store.messages.values()
        if store.listed(m, now) and _matches(m, query, sent_filters)
    ]
    wanted.sort(key=lambda m: (m.date_created, m.seq), reverse=True)
    start = page * page_size
    token = query.get("PageToken", "")
    if token.startswith("PA"):
        after = [i for i, m in enumerate(wanted) if m.sid == token[2:]]
        if after:
            start = after[0] + 1
    chunk = wanted[start : start + page_size]
    filters = {k: query[k] for k in ("To", "From", *_DATE_SENT_FILTERS) if k in query}
    path = request.path

    def page_uri(number: int, page_token: str | None = None) -> str:
        args = {**filters, "PageSize": str(page_size), "Page": str(number)}
        if page_token:
            args["PageToken"] = page_token
        return f"{path}?{urlencode(args)}"

    has_next = start + page_size < len(wanted) and bool(chunk)
    body = {
        "end": start + len(chunk) - 1 if chunk else start,
        "first_page_uri": page_uri(0),
        "messages": [message_json(m) for m in chunk],
        "next_page_uri": page_uri(page + 1, "PA" + chunk[-1].sid) if has_next else None,
        "page": page,
        "page_size": page_size,
        "previous_page_uri": page_uri(page - 1) if page > 0 else None,
        "start": start,
        "uri": request.path_qs,
    }
    return web.json_response(body)


def message_json(message: Message) -> dict[str, Any]:
    """A message as the Messages API shows it."""
    uri = f"/{API_VERSION}/Accounts/{message.account_sid}/Messages/{message.sid}"
    return {
        "account_sid": message.account_sid,
        "api_version": API_VERSION,
        "body": message.body,
        "date_created": rfc2822(message.date_created),
        "date_sent": rfc2822(message.date_sent),
        "date_updated": rfc2822(message.date_updated),
        "direction": message.direction,
        "error_code": message.error_code,
        "error_message": message.error_message,
        "from": message.from_,
        "messaging_service_sid": message.messaging_service_sid,
        "num_media": str(message.num_media),
        "num_segments": str(message.num_segments),
        "price": message.price,
        "price_unit": "USD",
        "sid": message.sid,
        "status": message.status,
        "subresource_uris": {
            "media": f"{uri}/Media.json",
            "feedback": f"{uri}/Feedback.json",
        },
        "to": message.to,
        "uri": f"{uri}.json",
    }


def _validate(params: dict[str, str]) -> tuple[int, str] | None:
    """The error code and text Twilio answers a bad create with, or None."""
    return next(_problems(params), None)


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
    return _draw(
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


def _draw(draw: float, outcomes: tuple[tuple[str, float], ...]) -> str:
    """The outcome whose share of [0, 1) holds `draw`; "ok" past them all."""
    for outcome, rate in outcomes:
        if draw < rate:
            return outcome
        draw -= rate
    return "ok"


async def _list_fault(request: web.Request) -> web.Response | None:
    """Log a list call; answer its scripted or random fault, or None to list normally."""
    store = request.app[STORE]
    config = store.config
    to = request.query.get("To", "")
    scripted = store.take_scripted(to, on="list") if to else None
    outcome = scripted or _draw(
        store.list_rng.random(),
        (
            ("500", config.rate_list_500),
            ("503", config.rate_list_503),
            ("timeout", config.rate_list_timeout),
        ),
    )
    source = "script" if scripted else ("random" if outcome != "ok" else None)
    store.list_requests.append(
        {"time": iso8601_ms(store.now()), "to": to or None, "outcome": outcome, "source": source}
    )
    if outcome == "ok":
        return None
    if outcome == "timeout":
        await _hold(request)
        _drop(request)
    status, code = _LIST_ERRORS[outcome]
    return error_response(status, code)


async def _answer_early(request: web.Request, entry: dict[str, Any], outcome: str) -> web.Response:
    assert outcome in OUTCOMES
    entry["outcome"] = outcome
    if outcome == "timeout":
        await _hold(request)
        _drop(request)
    if outcome == "drop_before_create":
        _drop(request)
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


async def _hold(request: web.Request) -> None:
    """Keep the request open for `timeout_hold_s`, past the client's timeout (or shutdown)."""
    closing = request.app[CLOSING]
    hold = request.app[STORE].config.timeout_hold_s
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(closing.wait(), hold)


def _drop(request: web.Request) -> NoReturn:
    """Close the connection without an answer, as a crashed proxy or a cut network would."""
    request[DROPPED] = True
    if request.transport is not None:
        request.transport.abort()
    raise web.HTTPServiceUnavailable()


def _matches(message: Message, query: Mapping[str, str], sent: list[tuple[str, date]]) -> bool:
    """Twilio's list filters. DateSent compares whole GMT days and never matches a message
    without a date_sent (one still queued)."""
    if "To" in query and message.to != query["To"]:
        return False
    if "From" in query and message.from_ != query["From"]:
        return False
    if not sent:
        return True
    if message.date_sent is None:
        return False
    day = message.date_sent.astimezone(UTC).date()
    return all(_COMPARE[op](day, value) for op, value in sent)


_COMPARE = {"==": operator.eq, "<=": operator.le, ">=": operator.ge}


def _date_sent_filters(query: Mapping[str, str]) -> list[tuple[str, date]]:
    """The DateSent filters as (operator, GMT day); raise ValueError on a malformed date."""
    return [(op, _gmt_day(query[key])) for key, op in _DATE_SENT_FILTERS.items() if key in query]


def _gmt_day(raw: str) -> date:
    """The GMT day of `YYYY-MM-DD` or an ISO 8601 date-time (no offset means GMT)."""
    found = _DATE_SENT.match(raw.strip())
    if found is None:
        raise ValueError("Invalid date value.")
    try:
        if found.group(0) == found.group("day"):
            return date.fromisoformat(found.group("day"))
        moment = datetime.fromisoformat(found.group(0).replace(" ", "T").replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("Invalid date value.") from None
    if moment.tzinfo is None:
        return moment.date()
    return moment.astimezone(UTC).date()
