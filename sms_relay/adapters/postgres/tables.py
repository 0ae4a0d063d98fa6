"""PostgreSQL's tables as Alembic migrates them; the statements are in the sibling modules."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Sequence,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData()

lease_token_seq = Sequence("delivery_lease_token_seq", metadata=metadata)


def _now() -> Column[object]:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


deliveries = Table(
    "deliveries",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("event_type", Text, nullable=False),
    # claimed -> sending -> accepted -> Twilio's states; or failed / suppressed / dead_lettered
    Column("state", Text, nullable=False),
    Column("phone_hash", Text, nullable=False),
    Column("phone_masked", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("message_sid", Text, unique=True),
    Column("error_code", Integer),
    Column("last_error", Text),
    Column("consent_at", DateTime(timezone=True)),
    Column("consent_purpose", Text),
    Column("consent_source", Text),  # where consent was given (a label, no personal data)
    Column("lease_owner", Text),
    Column("lease_token", BigInteger),
    Column("lease_until", DateTime(timezone=True)),
    Column("sending_started_at", DateTime(timezone=True)),
    # A send may have created a message not yet matched: reconcile before any resend.
    Column("doubt_since", DateTime(timezone=True)),
    # Hashes of every body actually sent (reconciliation matches these).
    Column("sent_body_hashes", ARRAY(Text), nullable=False, server_default="{}"),
    # The consumer's own settled step; `reported` says its status record reached Kafka.
    Column("settled_state", Text),
    Column("reported", Boolean, nullable=False, server_default="false"),
    # The rendered body's parts and encoding (GSM-7, UCS-2), recorded when a send settles.
    Column("segments", Integer),
    Column("encoding", Text),
    _now(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_deliveries_state_lease", "state", "lease_until"),
    Index("ix_deliveries_in_doubt", "doubt_since", postgresql_where="doubt_since IS NOT NULL"),
    # Pruning (created_at never changes: no cost to HOT updates) and erasure.
    Index("ix_deliveries_created_at", "created_at"),
    Index("ix_deliveries_phone_hash", "phone_hash"),
)

status_history = Table(
    "status_history",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("event_id", Text, index=True),
    Column("message_sid", Text, index=True),
    Column("status", Text, nullable=False),
    Column("error_code", Integer),
    Column("source", Text, nullable=False),
    # Twilio's I-Twilio-Idempotency-Token, or ours for consumer steps: a step is recorded once.
    Column("idempotency_token", Text, nullable=False, unique=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_status_history_recorded_at", "recorded_at", postgresql_using="brin"),
)

suppressions = Table(
    "suppressions",
    metadata,
    Column("phone_hash", Text, primary_key=True),
    Column("phone_masked", Text, nullable=False),
    Column("reason", Text, nullable=False),
    _now(),
)

callback_outbox = Table(
    "callback_outbox",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("topic", Text, nullable=False),
    Column("key", LargeBinary),
    Column("value", LargeBinary, nullable=False),
    Column("headers", JSONB, nullable=False, server_default="{}"),
    Column("idempotency_token", Text, unique=True),
    # MessageSid:MessageStatus:ErrorCode of a status callback (what the signature covers):
    # a replay with a fresh idempotency token is still a duplicate.
    Column("content_key", Text, unique=True),
    _now(),
    Column("published_at", DateTime(timezone=True)),
    Index("ix_callback_outbox_unpublished", "id", postgresql_where="published_at IS NULL"),
    Index("ix_callback_outbox_created_at", "created_at", postgresql_using="brin"),
)

phone_verifications = Table(
    "phone_verifications",
    metadata,
    Column("phone_hash", Text, primary_key=True),
    Column("phone_masked", Text, nullable=False),
    Column("verified_at", DateTime(timezone=True), nullable=False),
)

dlq_replays = Table(
    "dlq_replays",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("event_id", Text),
    Column("dlq_topic", Text, nullable=False),
    Column("dlq_partition", Integer, nullable=False),
    Column("dlq_offset", BigInteger, nullable=False),
    Column("reason", Text),
    Column("operator", Text, nullable=False),
    Column("replayed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("run_id", BigInteger),
    Index("ix_dlq_replays_record", "dlq_topic", "dlq_partition", "dlq_offset"),
)

# One row per `dlq replay` run: what it reads to, and how far it got (for --resume).
dlq_replay_runs = Table(
    "dlq_replay_runs",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("dlq_topic", Text, nullable=False),
    Column("target_topic", Text, nullable=False),
    Column("operator", Text, nullable=False),
    Column("options", JSONB, nullable=False),
    Column("end_offsets", JSONB, nullable=False),
    Column("positions", JSONB, nullable=False),
    Column("matched", BigInteger, nullable=False, server_default="0"),
    Column("replayed", BigInteger, nullable=False, server_default="0"),
    Column("outcome", Text, nullable=False, server_default="running"),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
)

api_keys = Table(
    "api_keys",
    metadata,
    # Public id, also the key's prefix; the key itself is stored only as its SHA-256.
    Column("key_id", Text, primary_key=True),
    Column("client", Text, nullable=False),
    Column("secret_hash", Text, nullable=False),
    Column("event_kinds", ARRAY(Text), nullable=False),
    Column("rate_limit", Integer, nullable=False),
    Column("rate_window_seconds", Float, nullable=False),
    _now(),
    Column("revoked_at", DateTime(timezone=True)),
)

ingestions = Table(
    "ingestions",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("event_id", Text, nullable=False, index=True),
    Column("event_type", Text, nullable=False),
    Column("key_id", Text, nullable=False),
    Column("client", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_ingestions_received_at", "received_at", postgresql_using="brin"),
)

rate_limits = Table(
    "rate_limits",
    metadata,
    Column("key", Text, primary_key=True),
    # The hits still inside the window, oldest first (at most the limit's count).
    Column("hits", ARRAY(DateTime(timezone=True)), nullable=False, server_default="{}"),
    # The newest hit plus the window: past it the row is empty and may be deleted.
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_rate_limits_expires_at", "expires_at"),
)

alert_windows = Table(
    "alert_windows",
    metadata,
    # The event that opened a collapse window for (number, alert key) holds it: its own
    # redelivery still sends; another event of that key inside the window is collapsed.
    Column("event_id", Text, primary_key=True),
    Column("phone_hash", Text, nullable=False),
    Column("key_hash", Text, nullable=False),  # the alert key, keyed-hashed
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Index("ix_alert_windows_number", "phone_hash", "opened_at"),
)

inbound_keywords = Table(
    "inbound_keywords",
    metadata,
    # One row per inbound MessageSid: a replayed or retried keyword has no second effect.
    Column("message_sid", Text, primary_key=True),
    Column("phone_hash", Text, nullable=False),
    Column("action", Text, nullable=False),
    # When Twilio received the message (its Message resource's date_created).
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("applied", Boolean, nullable=False),
    _now(),
)

keyword_latest = Table(
    "keyword_latest",
    metadata,
    # The newest keyword applied for a number; an older one arriving later is not applied.
    Column("phone_hash", Text, primary_key=True),
    Column("action", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("message_sid", Text, nullable=False),
)

erasures = Table(
    "erasures",
    metadata,
    # The audit of `sms-relay forget`: who, when, how many rows per table; never the number.
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("operator", Text, nullable=False),
    Column("removed", JSONB, nullable=False),
    Column("erased_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

scheduled_sends = Table(
    "scheduled_sends",
    metadata,
    # An event stored to be sent when due (it holds the number: erasure reaches it).
    Column("event_id", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("phone_hash", Text, nullable=False),
    Column("cancel_key", Text),
    Column("due_at", DateTime(timezone=True), nullable=False),
    # Taken by one scheduler until then (the claim's lease still fences the send).
    Column("taken_until", DateTime(timezone=True), nullable=False, server_default=func.now()),
    _now(),
    Index("ix_scheduled_sends_due_at", "due_at"),
    Index("ix_scheduled_sends_phone_hash", "phone_hash"),
    Index("ix_scheduled_sends_cancel_key", "cancel_key"),
)

appointment_cancellations = Table(
    "appointment_cancellations",
    metadata,
    # A cancel, remembered so a reminder read after it still ends `canceled`.
    Column("cancel_key", Text, primary_key=True),
    Column("event_id", Text, nullable=False),
    _now(),
    Index("ix_appointment_cancellations_created_at", "created_at"),
)
