"""Chaos fixtures: control over the local stack's Kafka and PostgreSQL processes."""

from __future__ import annotations

import subprocess

import pytest

from tests.support import ROOT, written_stack_env


class Stack:
    """Stops and starts the local stack's services (scripts/stack)."""

    def stop(self, service: str) -> None:
        subprocess.run([str(ROOT / "scripts" / "stack"), "stop", service], check=True)

    def start(self) -> None:
        # `up --infra` starts whatever is not running and waits until it answers.
        subprocess.run([str(ROOT / "scripts" / "stack"), "up", "--infra"], check=True)


@pytest.fixture
def stack(infrastructure: tuple[str, str]) -> Stack:
    """Only the local stack can be restarted; anything else is a clear failure, not a skip.
    Its env file names it: the `infrastructure` fixture has started it, or the caller
    points at it (each test's own `start` brings back what it stopped)."""
    env = written_stack_env()
    if infrastructure[0] != env.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.fail(
            "chaos tests restart Kafka and PostgreSQL of the local stack (scripts/stack); "
            f"this run uses {infrastructure[0]}. Run them with `make test`, or deselect "
            "them with -m 'not chaos'."
        )
    return Stack()
