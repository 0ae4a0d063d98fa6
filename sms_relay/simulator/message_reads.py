"""The Messages API's fetch and list (paging, To/From/DateSent filters, list faults), and
a message's JSON."""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from .faults import draw_fault, drop, hold
from .store import STORE, Message, iso8601_ms
from .wire import API_VERSION, error_response, not_found, rfc2822

# Twilio documents DateSent as a GMT day, YYYY-MM-DD; the SDK sends YYYY-MM-DDTHH:MM:SSZ.
_DATE_SENT = re.compile(
    r"\A(?P<day>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?)?\Z"
)
_DATE_SENT_FILTERS = {"DateSent": "==", "DateSent<": "<=", "DateSent>": ">="}
_LIST_ERRORS = {"429": (429, 20429), "500": (500, 20500), "503": (503, 20503)}


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


async def _list_fault(request: web.Request) -> web.Response | None:
    """Log a list call; answer its scripted or random fault, or None to list normally."""
    store = request.app[STORE]
    config = store.config
    to = request.query.get("To", "")
    scripted = store.take_scripted(to, on="list") if to else None
    outcome = scripted or draw_fault(
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
        await hold(request)
        drop(request)
    status, code = _LIST_ERRORS[outcome]
    return error_response(status, code)


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
