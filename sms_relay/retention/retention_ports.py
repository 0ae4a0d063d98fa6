"""What retention and erasure need from the outside: a table's prunable rows, the eraser."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class PrunableRows(Protocol):
    """The rows of one table that its rule lets go once older than a cutoff.

    Both methods raise DatabaseUnavailableError. The first key of what they return is the
    table itself; others are tables whose rows go with it (a delivery's status history).
    """

    async def prune(self, cutoff: datetime, limit: int) -> dict[str, int]:
        """Delete at most `limit` of them (one short transaction); how many went, by table."""
        ...

    async def count(self, cutoff: datetime) -> dict[str, int]:
        """How many would go, by table (`--dry-run`)."""
        ...


@dataclass(frozen=True)
class Removed:
    """Rows removed by table (deliveries: made tombstones), the Twilio SIDs of those
    deliveries, and how many of the number's deliveries were in flight and kept."""

    rows: dict[str, int]
    message_sids: list[str]
    in_flight: int = 0


class ErasureStore(Protocol):
    async def erase(self, phone_hash: str, rate_keys: Sequence[str], operator: str) -> Removed:
        """Erase every row of one number (by its keyed hash) in every table but
        `suppressions`, and write an audit row without it, in one transaction. Its settled
        deliveries become tombstones that keep their eventId (a replay stays a duplicate);
        its deliveries in flight are left whole and counted. Raises
        DatabaseUnavailableError."""
        ...
