"""Waiting helpers and a small webhook receiver for the simulator tests."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from aiohttp import web

ACCOUNT_SID = "AC" + "a1" * 16
AUTH_TOKEN = "f00d" * 8
SERVICE_SID = "VA" + "b2" * 16
SENDER = "+15005550006"


def simulator_log(records: list[logging.LogRecord]) -> str:
    """What the simulator logged (the SDK and urllib3 log on the client side: not counted)."""
    return "\n".join(
        record.getMessage()
        for record in records
        if record.name.startswith(("sms_relay.simulator", "aiohttp"))
    )


@dataclass(frozen=True)
class Received:
    """One request the receiver got: the full URL as seen by the app, headers and form."""

    url: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]


class WebhookReceiver:
    """An aiohttp app on a free port that records every POST and answers scripted statuses,
    each after a scripted delay (to make the sender's read timeout expire): the next of
    `delays`, or for every callback of a MessageStatus, its `delays_by_status`."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.answers: deque[int] = deque()
        self.delays: deque[float] = deque()
        self.delays_by_status: dict[str, float] = {}
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return self.base_url + path

    def with_status(self, status: str) -> list[Received]:
        return [r for r in self.requests if r.form.get("MessageStatus") == status]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.requests.append(
            Received(
                url=str(request.url),
                path=request.path,
                headers=dict(request.headers),
                form={key: str(form[key]) for key in form},
            )
        )
        status = self.answers.popleft() if self.answers else 200
        if self.delays:
            await asyncio.sleep(self.delays.popleft())
        elif form.get("MessageStatus") in self.delays_by_status:
            await asyncio.sleep(self.delays_by_status[str(form["MessageStatus"])])
        return web.Response(status=status, text="<Response/>", content_type="text/xml")
