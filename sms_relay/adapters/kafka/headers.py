"""The `sms-relay-*` record headers: every name we write or read, and their one codec.

Values travel as UTF-8 text (numbers in decimal). Headers of other producers are left
alone: `decode_headers` returns only ours.
"""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka import Message

PREFIX = "sms-relay-"

# On retry-tier and DLQ records (the consumer writes them, the consumer and `dlq` read).
ATTEMPT = PREFIX + "attempt"  # sends made so far
NOT_BEFORE = PREFIX + "not-before"  # epoch ms before which a retry-tier record waits
ERROR = PREFIX + "error"  # the last error, at most 200 characters
DLQ_REASON = PREFIX + "dlq-reason"  # why the record was dead-lettered
KIND = PREFIX + "kind"  # the event kind (`order-shipped`, ...): tools filter DLQs by it
# Where the event first entered, kept across retry tiers and replays (for `trace`).
ORIGINAL_TOPIC = PREFIX + "original-topic"
ORIGINAL_PARTITION = PREFIX + "original-partition"
ORIGINAL_OFFSET = PREFIX + "original-offset"
ORIGIN = (ORIGINAL_TOPIC, ORIGINAL_PARTITION, ORIGINAL_OFFSET)
# On a record `dlq replay` put back on the main topic: topic:partition:offset it came from.
REPLAYED_FROM = PREFIX + "replayed-from"
# On a record ingested over HTTP: which API key (its id, never the key) and client sent it.
API_KEY_ID = PREFIX + "api-key-id"
CLIENT = PREFIX + "client"

Headers = dict[str, str]
# Headers as confluent-kafka takes them.
KafkaHeaders = list[tuple[str, str | bytes | None]]


def encode_headers(headers: Mapping[str, str | int]) -> KafkaHeaders:
    """`headers` (names from this module) as a record's headers."""
    return [(name, str(value).encode()) for name, value in headers.items()]


def decode_headers(message: Message) -> Headers:
    """A record's `sms-relay-*` headers by name; others, and valueless ones, are ignored."""
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    decoded: Headers = {}
    for name, value in pairs:
        if name.startswith(PREFIX) and value is not None:
            decoded[name] = value if isinstance(value, str) else value.decode(errors="replace")
    return decoded
