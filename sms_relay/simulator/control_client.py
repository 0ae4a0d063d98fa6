"""Clients of the `/_simulator/*` control API, sync and async, for tests, benchmarks and demos."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import aiohttp

from .wire import DEFAULT_INBOUND_TO


class SimulatorError(RuntimeError):
    """The control API refused a request or could not be reached; not retriable."""


@dataclass(frozen=True)
class InboundAnswer:
    """What the app answered to an inbound SMS the simulator delivered."""

    status: int
    body: str
    content_type: str
    message_sid: str


def _inbound_payload(from_: str, body: str, to: str, url: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {"from": from_, "to": to, "body": body}
    if url is not None:
        payload["url"] = url
    return payload


def _inbound_answer(status: int, data: Any) -> InboundAnswer:
    if status != 200:
        raise SimulatorError(f"inbound delivery failed ({status}): {data}")
    return InboundAnswer(
        int(data["status"]), str(data["body"]), str(data["content_type"]), str(data["message_sid"])
    )


def _code(status: int, data: Any) -> str | None:
    if status == 404:
        return None
    _expect_ok(status, data)
    return str(data["code"])


def _expect_ok(status: int, data: Any) -> None:
    if status != 200:
        raise SimulatorError(f"simulator answered {status}: {data}")


class SimulatorClient:
    """Blocking client: `messages()`, `callbacks()`, `script()`, `verification_code()`, ...

    In async tests, prefer `AsyncSimulatorClient` for `send_inbound`: it waits for the
    app under test, which may run on the caller's own event loop.
    """

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def health(self) -> dict[str, Any]:
        status, data = self._call("GET", "/_simulator/health")
        _expect_ok(status, data)
        return dict(data)

    def messages(self) -> list[dict[str, Any]]:
        """Every create request, oldest first, with its outcome and the message's status."""
        status, data = self._call("GET", "/_simulator/messages")
        _expect_ok(status, data)
        return list(data["messages"])

    def callbacks(self) -> list[dict[str, Any]]:
        """Every status callback attempt, oldest first (drops included, `dropped: true`)."""
        status, data = self._call("GET", "/_simulator/callbacks")
        _expect_ok(status, data)
        return list(data["callbacks"])

    def lists(self) -> list[dict[str, Any]]:
        """Every list call, oldest first: its `To` filter, outcome and source."""
        status, data = self._call("GET", "/_simulator/lists")
        _expect_ok(status, data)
        return list(data["lists"])

    def reset(self) -> None:
        """Forget messages, logs, scripts and verifications; stop pending callbacks."""
        _expect_ok(*self._call("POST", "/_simulator/reset", {}))

    def script(self, to: str, outcomes: list[str], on: str = "create") -> None:
        """Answer the next creates to `to` with `outcomes` (store.OUTCOMES: ok, 429, 500,
        ..., timeout_after_create, html), or with on="list" the next lists filtered by `To`
        (store.LIST_OUTCOMES: ok, 429, 500, 503, timeout)."""
        payload = {"to": to, "outcomes": outcomes, "on": on}
        _expect_ok(*self._call("POST", "/_simulator/script", payload))

    def verification_code(self, to: str) -> str | None:
        """The code of the latest verification sent to `to`, or None."""
        query = urllib.parse.urlencode({"to": to})
        return _code(*self._call("GET", f"/_simulator/verifications?{query}"))

    def send_inbound(
        self, from_: str, body: str, to: str = DEFAULT_INBOUND_TO, url: str | None = None
    ) -> InboundAnswer:
        """Have the simulator POST a signed inbound SMS to the configured (or given) URL."""
        payload = _inbound_payload(from_, body, to, url)
        return _inbound_answer(*self._call("POST", "/_simulator/inbound", payload))

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change fault rates, latency etc. of the running simulator; returns all settings."""
        status, data = self._call("POST", "/_simulator/config", changes)
        _expect_ok(status, data)
        return dict(data)

    def advance_clock(self, seconds: float) -> None:
        """Move the simulator's clock forward (Verify expiry and send windows)."""
        _expect_ok(*self._call("POST", "/_simulator/clock", {"advance_seconds": seconds}))

    def _call(self, method: str, path: str, payload: object = None) -> tuple[int, Any]:
        url = self.base_url + path
        if urllib.parse.urlsplit(url).scheme not in {"http", "https"}:
            raise SimulatorError(f"not an http(s) URL: {url}")
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http(s) only
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read() or b"null")
        except OSError as exc:
            raise SimulatorError(f"simulator at {self.base_url} unreachable: {exc}") from exc


class AsyncSimulatorClient:
    """The same control API for async code; each call opens and closes its own session."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    async def messages(self) -> list[dict[str, Any]]:
        status, data = await self._call("GET", "/_simulator/messages")
        _expect_ok(status, data)
        return list(data["messages"])

    async def callbacks(self) -> list[dict[str, Any]]:
        status, data = await self._call("GET", "/_simulator/callbacks")
        _expect_ok(status, data)
        return list(data["callbacks"])

    async def lists(self) -> list[dict[str, Any]]:
        status, data = await self._call("GET", "/_simulator/lists")
        _expect_ok(status, data)
        return list(data["lists"])

    async def reset(self) -> None:
        _expect_ok(*await self._call("POST", "/_simulator/reset", {}))

    async def script(self, to: str, outcomes: list[str], on: str = "create") -> None:
        payload = {"to": to, "outcomes": outcomes, "on": on}
        _expect_ok(*await self._call("POST", "/_simulator/script", payload))

    async def verification_code(self, to: str) -> str | None:
        return _code(*await self._call("GET", "/_simulator/verifications", query={"to": to}))

    async def send_inbound(
        self, from_: str, body: str, to: str = DEFAULT_INBOUND_TO, url: str | None = None
    ) -> InboundAnswer:
        payload = _inbound_payload(from_, body, to, url)
        return _inbound_answer(*await self._call("POST", "/_simulator/inbound", payload))

    async def configure(self, **changes: Any) -> dict[str, Any]:
        status, data = await self._call("POST", "/_simulator/config", changes)
        _expect_ok(status, data)
        return dict(data)

    async def advance_clock(self, seconds: float) -> None:
        payload = {"advance_seconds": seconds}
        _expect_ok(*await self._call("POST", "/_simulator/clock", payload))

    async def _call(
        self,
        method: str,
        path: str,
        payload: object = None,
        query: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.request(
                    method, self.base_url + path, json=payload, params=query
                ) as response,
            ):
                return response.status, await response.json(content_type=None)
        except aiohttp.ClientError as exc:
            raise SimulatorError(f"simulator at {self.base_url} unreachable: {exc}") from exc
