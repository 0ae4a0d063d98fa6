"""The retention policy: which table keeps its rows how long, pruned in small batches."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sms_relay.domain.states import LEDGER_ONLY, DeliveryState
from sms_relay.retention.retention_ports import PrunableRows
from sms_relay.settings import Settings

log = logging.getLogger(__name__)

# Settled: the consumer is done with the row (Twilio's states, failed, suppressed,
# dead-lettered). claimed/sending/retry_scheduled rows are in flight and never pruned.
PRUNABLE_STATES = frozenset(DeliveryState) - LEDGER_ONLY - {DeliveryState.SCHEDULED}

# Tables whose rows never expire: a STOP must outlive everything; the erasure audit is
# the proof that an erasure happened.
KEPT_FOREVER = ("suppressions", "erasures")

DAY = timedelta(days=1)


def retention_periods(settings: Settings) -> dict[str, timedelta]:
    """How long each pruned table keeps a row, past its own time column
    (docs/data-retention.md lists the columns)."""
    keep = settings.retention
    ledger = keep.ledger_retention_days * DAY
    return {
        # Settled deliveries with their status history; history of unknown messages too.
        "deliveries": ledger,
        "status_history": ledger,
        "callback_outbox": timedelta(seconds=settings.callbacks_outbox_retention_seconds),
        "inbound_keywords": keep.inbound_keywords_retention_days * DAY,
        "keyword_latest": keep.inbound_keywords_retention_days * DAY,
        "ingestions": keep.ingestions_retention_days * DAY,
        "phone_verifications": keep.verifications_retention_days * DAY,
        # A window's row is empty once past its expiry: nothing to keep.
        "rate_limits": timedelta(0),
        # An alert's window matters at most a day (no collapse window or age is longer).
        "alert_windows": DAY,
        "dlq_replays": keep.dlq_replays_retention_days * DAY,
        "dlq_replay_runs": keep.dlq_replays_retention_days * DAY,
        "api_keys": keep.revoked_api_keys_retention_days * DAY,
        # Orphans past their due time (a send goes when its event settles); cancels as
        # long as a reminder read after them could be: the dedupe horizon.
        "scheduled_sends": ledger,
        "appointment_cancellations": ledger,
    }


@dataclass(frozen=True)
class Rule:
    table: str
    keep: timedelta
    rows: PrunableRows


class Pruner:
    """Applies every table's rule. Each batch is its own transaction and skips the rows
    another transaction holds, so several processes may prune at once."""

    def __init__(
        self,
        rules: list[Rule],
        *,
        batch_size: int,
        now: Callable[[], datetime],
        max_batches: int = 1000,
    ) -> None:
        self._rules = rules
        self._batch_size = batch_size
        self._now = now
        # One round stops here per table; the next round goes on (a huge backlog after
        # a first deployment is pruned over several rounds, never in one long run).
        self._max_batches = max_batches

    @classmethod
    def for_tables(
        cls,
        settings: Settings,
        tables: Mapping[str, PrunableRows],
        now: Callable[[], datetime],
        **options: int,
    ) -> Pruner:
        periods = retention_periods(settings)
        rules = [Rule(table, periods[table], rows) for table, rows in tables.items()]
        return cls(rules, batch_size=settings.retention.prune_batch_size, now=now, **options)

    async def count(self) -> dict[str, int]:
        """What a round would remove now, by table. Raises DatabaseUnavailableError."""
        now, counts = self._now(), dict[str, int]()
        for rule in self._rules:
            for table, rows in (await rule.rows.count(now - rule.keep)).items():
                counts[table] = counts.get(table, 0) + rows
        return counts

    async def prune(self) -> dict[str, int]:
        """One round: every table's old rows, batch by batch; what went, by table.
        Raises DatabaseUnavailableError (what went before it stays gone)."""
        now, removed = self._now(), dict[str, int]()
        for rule in self._rules:
            cutoff = now - rule.keep
            for _ in range(self._max_batches):
                batch = await rule.rows.prune(cutoff, self._batch_size)
                for table, rows in batch.items():
                    removed[table] = removed.get(table, 0) + rows
                if batch.get(rule.table, 0) < self._batch_size:
                    break
        if any(removed.values()):
            log.info("pruned", extra={"removed": {t: n for t, n in removed.items() if n}})
        return removed
