"""Pure rules of the callbacks service: client addresses, client networks, status ranks."""

from __future__ import annotations

import pytest

from callbacks.http import forwarded_client
from sms_relay.status.phone_verification import client_network
from sms_relay.status.status_projection import rank

PEER = "10.0.0.5"


@pytest.mark.parametrize(
    ("forwarded_for", "hops", "client"),
    [
        ("", 0, PEER),  # no proxy: the TCP peer
        ("198.51.100.7", 0, PEER),  # no proxy trusted: the header is the client's own words
        ("198.51.100.7", 1, "198.51.100.7"),  # one proxy appended what it saw
        ("6.6.6.6, 198.51.100.7", 1, "198.51.100.7"),  # the forged entry is ignored
        ("6.6.6.6, 198.51.100.7, 203.0.113.9", 2, "198.51.100.7"),  # CDN, then load balancer
        ("198.51.100.7", 2, "198.51.100.7"),  # fewer entries than hops: the leftmost
        ("", 1, PEER),  # a trusted proxy that did not append: the peer
        ("not-an-ip", 1, PEER),  # garbage from a misconfigured proxy: the peer
        ("2001:db8::1", 1, "2001:db8::1"),
    ],
)
def test_the_client_is_the_entry_written_by_the_outermost_trusted_proxy(
    forwarded_for: str, hops: int, client: str
) -> None:
    assert forwarded_client(PEER, forwarded_for, hops) == client


def test_ipv6_clients_share_their_64_and_ipv4_clients_their_address() -> None:
    assert client_network("2001:db8:1:2:aaaa::1") == client_network("2001:db8:1:2:ffff::9")
    assert client_network("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_network("2001:db8:1:3::1") != client_network("2001:db8:1:2::1")
    assert client_network("198.51.100.7") == "198.51.100.7"
    assert client_network("::ffff:198.51.100.7") == "198.51.100.7"
    assert client_network("unknown") == "unknown"


def test_ranks_never_let_a_late_step_overwrite_a_final_one() -> None:
    assert rank("accepted") < rank("queued") < rank("sent") < rank("delivered") < rank("read")
    assert rank("delivered") == rank("undelivered") == rank("failed") == rank("canceled")
    # Our ledger's own states and Twilio's `sending` are never written by the projection.
    for state in ("claimed", "sending", "retry_scheduled", "suppressed", "dead_lettered"):
        assert rank(state) == -1
