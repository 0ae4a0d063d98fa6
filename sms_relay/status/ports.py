"""The callbacks' use cases' ports: what they need of PostgreSQL, Kafka and Twilio."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class FetchedMessage:
    sid: str
    status: str
    error_code: int | None


# A record's headers: (name, value) pairs, in the order they are written.
RecordHeaders = list[tuple[str, str | bytes | None]]


class Publisher(Protocol):
    """Kafka as the outbox sees it: records out, acknowledged by the broker (acks=all)."""

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        headers: RecordHeaders | None = None,
    ) -> asyncio.Future[None]:
        """Queue one record; the future settles with the broker's acknowledgement and
        fails with BrokerUnavailableError when it refused the record. Raises
        BrokerUnavailableError when the record cannot even be queued."""
        ...

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        headers: RecordHeaders | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Produce one record and wait for the broker's acknowledgement. Raises
        BrokerUnavailableError when it refused the record or did not answer in `timeout`."""
        ...
