"""Gauges the consumer process refreshes for operations: lag per partition, stuck claims.

`LagRecorder` is a librdkafka `stats_cb`: lag comes from the client's own statistics
(high watermark minus committed offset), so measuring it costs no broker round trip.
`watch_stuck_claims` counts deliveries orphaned in `sending` in the shared ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from prometheus_client import Gauge

from sms_relay.adapters.postgres.deliveries import count_stuck_claims, count_unresolved_doubts
from sms_relay.adapters.postgres.engine import AsyncEngine
from sms_relay.errors import DatabaseUnavailableError
from sms_relay.metrics import ConsumerMetrics
from sms_relay.periodic import every

log = logging.getLogger(__name__)

# How often librdkafka emits statistics when the recorder is wired (milliseconds).
STATS_INTERVAL_MS = 5000


# librdkafka's fetch states of partitions this client no longer (or never did) consume.
_NOT_FETCHING = frozenset({"none", "stopping", "stopped"})


class LagRecorder:
    """Sets `sms_relay_consumer_lag_records{topic, partition}` from librdkafka statistics.

    Only partitions this process fetches are reported; the gauge drops a partition once
    it moves to another process (which then reports it).
    """

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._seen: set[tuple[str, str]] = set()

    def __call__(self, stats_json: str) -> None:
        try:
            stats = json.loads(stats_json)
        except ValueError:
            return
        current: set[tuple[str, str]] = set()
        for topic, details in (stats.get("topics") or {}).items():
            for partition, numbers in (details.get("partitions") or {}).items():
                lag = numbers.get("consumer_lag", -1)
                if (
                    partition == "-1"
                    or numbers.get("fetch_state") in _NOT_FETCHING
                    or not isinstance(lag, int)
                    or lag < 0
                ):
                    continue
                self._gauge.labels(topic, partition).set(lag)
                current.add((topic, partition))
        for labels in self._seen - current:
            with contextlib.suppress(KeyError):
                self._gauge.remove(*labels)
        self._seen = current


async def watch_stuck_claims(
    engine: AsyncEngine,
    metrics: ConsumerMetrics,
    stuck_after_seconds: float,
    stop: asyncio.Event,
    interval_seconds: float = 30.0,
) -> None:
    """Refresh the stuck-claim and unresolved-doubt gauges every `interval_seconds` until
    `stop` is set; a failed query keeps the last values (the database alerts have their
    own signal)."""

    async def refresh() -> None:
        metrics.stuck_sending_claims.set(await count_stuck_claims(engine, stuck_after_seconds))
        metrics.unresolved_doubts.set(await count_unresolved_doubts(engine))

    await every(
        interval_seconds,
        refresh,
        stop,
        what="stuck-claim count",
        survives=(DatabaseUnavailableError,),
    )
