"""The callbacks' use cases' ports: what they need of PostgreSQL, Kafka and Twilio."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FetchedMessage:
    sid: str
    status: str
    error_code: int | None
