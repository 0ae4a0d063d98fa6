"""Fixtures for the on-call commands: `sms-relay ...` run in-process with a test's settings."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest

from cli.main import main
from sms_relay.settings import Settings
from tests.support import settings_env


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    """`cli("trace", "...")` from sync tests, `await cli.run_async(...)` from async ones
    (the commands run their own event loop, so they need a thread there)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def __call__(self, *argv: str) -> CliResult:
        self._capsys.readouterr()
        code = main(list(argv))
        out, err = self._capsys.readouterr()
        return CliResult(code, out, err)

    async def run_async(self, *argv: str) -> CliResult:
        return await asyncio.to_thread(self, *argv)


@pytest.fixture
def cli(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    """The environment of `settings`, as an operator's shell would have it."""
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    return Cli(capsys)
