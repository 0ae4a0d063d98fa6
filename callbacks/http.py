"""Small HTTP helpers shared by the handlers: JSON errors that never echo input values."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError


def json_error(
    status: int, error: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    return web.json_response(
        {"error": error, "message": message, **extra}, status=status, headers=headers
    )


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


def client_ip(request: web.Request, trust_forwarded_for: bool) -> str:
    """The caller's address; X-Forwarded-For's last hop only when our proxy sets it."""
    if trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return request.remote or "unknown"


def route_name(request: web.BaseRequest) -> str:
    """The matched route's template (a bounded metric label), never the raw path."""
    resource = request.match_info.route.resource if isinstance(request, web.Request) else None
    return resource.canonical if resource is not None else "unmatched"
