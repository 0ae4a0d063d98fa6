"""`sms-relay callbacks` as a process: starts, warns when signatures are off, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import aiohttp
import pytest

from sms_relay.settings import Settings
from tests.support import eventually, reserved_port, settings_env

pytestmark = pytest.mark.integration


async def _answers(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def test_the_process_serves_warns_without_signatures_and_stops_on_sigterm(
    settings: Settings,
) -> None:
    port = reserved_port()
    env = {
        **os.environ,
        **settings_env(settings),
        "PORT": str(port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "REQUIRE_TWILIO_SIGNATURE": "false",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        "callbacks",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # A fresh interpreter's imports on a loaded 2-core host: a safety bound, not a target.
        healthz = f"http://127.0.0.1:{port}/healthz"
        await eventually(lambda: _answers(healthz), timeout=90, what="healthz")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), 60)
        finally:
            if process.returncode is None:  # never left running for the next test
                process.kill()
                await process.wait()
    assert process.returncode == 0
    logs = stderr.decode()
    assert '"level": "warning"' in logs
    assert "REQUIRE_TWILIO_SIGNATURE=false" in logs
    assert settings.twilio.auth_token.get_secret_value() not in logs


def test_production_refuses_to_start_without_signature_checks(settings: Settings) -> None:
    env = {
        **os.environ,
        **settings_env(settings),
        "APP_ENV": "production",
        "PHONE_HASH_KEY": "a-real-secret",
        "REQUIRE_TWILIO_SIGNATURE": "false",
    }
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "callbacks"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "REQUIRE_TWILIO_SIGNATURE=false is refused" in done.stderr.decode()
