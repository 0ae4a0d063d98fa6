"""The `alert_windows` table: flood control decided inside the claim's transaction.

The numbers' advisory locks (taken in hash order, so two claims cannot deadlock) make
claims of one number wait for each other, across partitions and processes; the decision
itself is `sms_relay.domain.collapse`, the in-memory ledger's too.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from sms_relay.adapters.postgres.engine import database_call
from sms_relay.domain.collapse import AlertWindow, CollapseAsk, collapse, lookback

# The first key of the two-key advisory locks: this table's, apart from any other use.
LOCK_SPACE = 19

_LOCK = text(
    "SELECT count(pg_advisory_xact_lock(:space, hashtext(h))) FROM "
    "(SELECT DISTINCT h FROM unnest(CAST(:hashes AS text[])) AS h ORDER BY h) AS numbers"
)
# Read after the locks, in a statement of its own: it sees every window committed before.
_WINDOWS = text(
    "WITH clock AS (SELECT clock_timestamp() AS now) "
    "SELECT w.event_id, w.phone_hash, w.key_hash, w.opened_at, clock.now FROM clock "
    "LEFT JOIN alert_windows w ON w.event_id = ANY(:ids) OR (w.phone_hash = ANY(:hashes) "
    "AND w.opened_at > clock.now - make_interval(secs => :lookback))"
)
_OPEN = text(
    "INSERT INTO alert_windows (event_id, phone_hash, key_hash, opened_at) "
    "SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:hashes AS text[]), "
    "CAST(:keys AS text[]), CAST(:at AS timestamptz[])) ON CONFLICT (event_id) DO NOTHING"
)


async def decide(connection: AsyncConnection, asks: Sequence[CollapseAsk]) -> dict[str, str | None]:
    """Each ask's reason to collapse (None: it may send), its window opened in the same
    transaction. The caller maps database errors (it runs inside the claim)."""
    if not asks:
        return {}
    hashes = sorted({ask.phone_hash for ask in asks})
    await connection.execute(_LOCK, {"space": LOCK_SPACE, "hashes": hashes})
    params = {
        "ids": [ask.event_id for ask in asks],
        "hashes": hashes,
        "lookback": lookback(asks).total_seconds(),
    }
    rows = (await connection.execute(_WINDOWS, params)).all()
    windows = [
        AlertWindow(r.event_id, r.phone_hash, r.key_hash, r.opened_at)
        for r in rows
        if r.event_id is not None
    ]
    reasons, opened = collapse(asks, windows, rows[0].now)
    if opened:
        await connection.execute(
            _OPEN,
            {
                "ids": [w.event_id for w in opened],
                "hashes": [w.phone_hash for w in opened],
                "keys": [w.key_hash for w in opened],
                "at": [w.opened_at for w in opened],
            },
        )
    return reasons


# Retention's batches: windows opened before the cutoff.
PRUNE = text(
    "DELETE FROM alert_windows WHERE event_id IN (SELECT event_id FROM alert_windows "
    "WHERE opened_at < :cutoff LIMIT :limit FOR UPDATE SKIP LOCKED)"
)
COUNT = text("SELECT count(*) FROM alert_windows WHERE opened_at < :cutoff")
_ERASE = text("DELETE FROM alert_windows WHERE phone_hash = :phone_hash")


@database_call
async def erase_number(connection: AsyncConnection, phone_hash: str) -> int:
    """Delete one number's windows (inside `forget`'s transaction)."""
    return int((await connection.execute(_ERASE, {"phone_hash": phone_hash})).rowcount or 0)
