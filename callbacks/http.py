"""Small HTTP helpers shared by the handlers: JSON errors that never echo input values."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy
from pydantic import ValidationError

# Twilio posts every webhook in this encoding, and nothing else.
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


def json_error(
    status: int, error: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    return web.json_response(
        {"error": error, "message": message, **extra}, status=status, headers=headers
    )


def problem(status: int, error: str, message: str) -> web.HTTPException:
    """An HTTP error to raise, with the same JSON body `json_error` answers."""
    kinds: dict[int, type[web.HTTPException]] = {
        400: web.HTTPBadRequest,
        415: web.HTTPUnsupportedMediaType,
    }
    body = json.dumps({"error": error, "message": message})
    return kinds[status](text=body, content_type="application/json")


async def read_form(request: web.Request) -> MultiDictProxy[str]:
    """A Twilio webhook's form: 415 for any other media type (multipart, JSON, ...), 400
    when it cannot be decoded; 413 past client_max_size. Cached by aiohttp after the
    first read, so the signature check and the handler share it."""
    if request.content_type != FORM_CONTENT_TYPE:
        raise problem(415, "unsupported_media_type", f"webhooks must be {FORM_CONTENT_TYPE}")
    try:
        form = await request.post()
    except (ValueError, LookupError):  # undecodable bytes, an unknown charset
        raise problem(400, "invalid_request", "the form could not be decoded") from None
    return form  # type: ignore[return-value]  # url-encoded forms hold strings only


def field_errors(error: ValidationError) -> list[dict[str, str]]:
    """Where and what kind of problem, and pydantic's message: never the offending value."""
    return [
        {
            "field": ".".join(str(part) for part in item["loc"]) or "body",
            "type": item["type"],
            "message": item["msg"],
        }
        for item in error.errors(include_input=False, include_url=False)
    ]


def invalid(error: ValidationError, what: str) -> web.Response:
    return json_error(
        400, "invalid_request", f"the {what} is not valid", fields=field_errors(error)
    )


def client_ip(request: web.Request, trusted_hops: int) -> str:
    """The caller's address, given how many proxies in front of us append to
    X-Forwarded-For (TRUSTED_PROXY_HOPS): see `forwarded_client`."""
    headers = request.headers.getall("X-Forwarded-For", [])
    return forwarded_client(request.remote or "unknown", ", ".join(headers), trusted_hops)


def forwarded_client(peer: str, forwarded_for: str, trusted_hops: int) -> str:
    """Each trusted proxy appends the address it saw, so the client is the entry
    `trusted_hops` from the end; what lies left of it was written by the client and is
    never believed. Fewer entries than hops: the leftmost, which a trusted proxy wrote.
    An entry that is not an address means a misconfigured proxy: the TCP peer then.
    """
    if trusted_hops == 0:
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    if not hops:
        return peer
    candidate = hops[max(0, len(hops) - trusted_hops)]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return peer


def route_name(request: web.BaseRequest) -> str:
    """The matched route's template (a bounded metric label), never the raw path."""
    resource = request.match_info.route.resource if isinstance(request, web.Request) else None
    return resource.canonical if resource is not None else "unmatched"
