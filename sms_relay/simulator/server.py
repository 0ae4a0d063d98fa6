"""Runs the simulator on a background thread with its own event loop (tests, benchmarks)."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

from aiohttp import web

from .app import PrivacyAccessLogger, create_simulator_app
from .config import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, SimulatorConfig
from .control_client import AsyncSimulatorClient, SimulatorClient, SimulatorError

_START_TIMEOUT_S = 10.0


class SimulatorServer(SimulatorClient):
    """The simulator on 127.0.0.1 and a free (or given) port, controlled over HTTP.

    `with SimulatorServer(config) as sim:` (or `async with`) starts and stops it;
    `sim.base_url` is what the Twilio SDK's `api.base_url` / `verify.base_url` take.
    The control methods (`messages()`, `script()`, ...) come from `SimulatorClient`;
    `sim.aclient` offers them as coroutines.
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        shutdown_timeout: float = 2.0,
    ) -> None:
        self.config = config or SimulatorConfig(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN)
        self.host = host
        self.port = port
        self._shutdown_timeout = shutdown_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        super().__init__(f"http://{host}:{port}")

    @property
    def aclient(self) -> AsyncSimulatorClient:
        return AsyncSimulatorClient(self.base_url, self.timeout)

    def start(self) -> SimulatorServer:
        """Start serving; raise SimulatorError when it cannot (port taken, bad config)."""
        if self._thread is not None:
            raise SimulatorError("simulator already started")
        ready = threading.Event()
        failures: list[BaseException] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._serve, args=(ready, failures), name="twilio-simulator", daemon=True
        )
        self._thread.start()
        if not ready.wait(_START_TIMEOUT_S):
            self.stop()
            raise SimulatorError("simulator did not start in time")
        if failures:
            self._thread.join()
            self._thread = None
            raise SimulatorError(f"simulator could not start: {failures[0]}") from failures[0]
        return self

    def stop(self) -> None:
        """Stop serving: pending callbacks are cancelled, held requests released."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._thread = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> SimulatorServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def _serve(self, ready: threading.Event, failures: list[BaseException]) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._open())
            except Exception as exc:
                failures.append(exc)
                if self._runner is not None:
                    loop.run_until_complete(self._runner.cleanup())
                return
            finally:
                ready.set()
            loop.run_forever()
            assert self._runner is not None
            loop.run_until_complete(self._runner.cleanup())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    async def _open(self) -> None:
        app = create_simulator_app(self.config)
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log_class=PrivacyAccessLogger,
            shutdown_timeout=self._shutdown_timeout,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.base_url = f"http://{self.host}:{self.port}"
