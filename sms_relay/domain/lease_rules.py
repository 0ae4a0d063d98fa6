"""How long a lease must be: the rule the lease keeper follows and the settings check."""

from __future__ import annotations

# Time kept in hand after a call's own deadline (scheduling delay, a slow response).
LEASE_MARGIN_SECONDS = 1.0
# Renewals per lease: with 8, a lease never has less than 7/8 of its length left when
# the heartbeat keeps time (one UPDATE per process each time, whatever it holds).
HEARTBEATS_PER_LEASE = 8


def longest_call_fits(lease_seconds: float, call_deadline_seconds: float) -> bool:
    """Whether a call can always start with its deadline plus margin left: the lease,
    less one heartbeat interval, must hold the longest call."""
    usable = lease_seconds * (1 - 1 / HEARTBEATS_PER_LEASE)
    return usable >= call_deadline_seconds + LEASE_MARGIN_SECONDS
