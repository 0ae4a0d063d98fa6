"""The `deliveries` table: every statement that writes it lives in this package.

The states and their moves are named in `sms_relay.domain.states` and bound from there.
`PostgresLedger` implements the delivery core's `Ledger` port (`sms_relay.delivery.delivery_ports`)
with the statements of `ledger_statements`; `follow_up_writes` serves the status
projection, `dlq replay` and the missing-callback reconciler; `delivery_reads` the
consumer's gauges, `trace` and `dlq list`; `retention_writes` retention and erasure.
"""

from sms_relay.adapters.postgres.deliveries.delivery_reads import (
    count_stuck_claims,
    count_unresolved_doubts,
    find,
    states_of,
)
from sms_relay.adapters.postgres.deliveries.follow_up_writes import (
    derive_twilio_states,
    reopen_dead_lettered,
    take_stuck_accepted,
)
from sms_relay.adapters.postgres.deliveries.postgres_ledger import PostgresLedger
from sms_relay.adapters.postgres.deliveries.retention_writes import (
    count_settled,
    erase_number,
    prune_settled,
)

__all__ = [
    "PostgresLedger",
    "count_settled",
    "count_stuck_claims",
    "count_unresolved_doubts",
    "derive_twilio_states",
    "erase_number",
    "find",
    "prune_settled",
    "reopen_dead_lettered",
    "states_of",
    "take_stuck_accepted",
]
