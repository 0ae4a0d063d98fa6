"""The callbacks process prunes every table on its own, every SMS_PRUNE_INTERVAL_SECONDS."""

from __future__ import annotations

import pytest

from sms_relay.settings import Settings
from tests.callbacks.conftest import callbacks_settings, execute, query_rows, running_callbacks
from tests.support import eventually

pytestmark = pytest.mark.integration


async def test_the_callbacks_process_prunes_old_rows_and_keeps_the_others(
    settings: Settings,
) -> None:
    url = settings.database_url.get_secret_value()
    for event_id, age in (("old", "100 days"), ("recent", "1 day")):
        execute(
            url,
            "INSERT INTO deliveries (event_id, event_type, state, phone_hash, phone_masked, "
            "created_at, updated_at) VALUES (:e, 'order-shipped', 'delivered', 'h', "
            "'+*******0123', now() - CAST(:age AS interval), now() - CAST(:age AS interval))",
            e=event_id,
            age=age,
        )
    execute(
        url,
        "INSERT INTO rate_limits (key, expires_at) VALUES ('gone', now() - interval '1 second'), "
        "('live', now() + interval '1 hour')",
    )
    retention = settings.retention.model_copy(update={"prune_interval_seconds": 0.2})
    served = callbacks_settings(settings, retention=retention)

    def remaining() -> tuple[list[str], list[str]] | None:
        deliveries = [r["event_id"] for r in query_rows(url, "SELECT event_id FROM deliveries")]
        limits = [r["key"] for r in query_rows(url, "SELECT key FROM rate_limits")]
        return (deliveries, limits) if "old" not in deliveries and "gone" not in limits else None

    async with running_callbacks(served):
        deliveries, limits = await eventually(remaining, what="the retention job's round")
    assert deliveries == ["recent"]
    assert limits == ["live"]
