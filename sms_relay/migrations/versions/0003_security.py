"""security: API keys, ingestion audit, shared rate limits, replay-proof webhooks

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 09:00:00

- api_keys: one row per upstream client key; only the SHA-256 of the key is stored.
- ingestions: which client (key id, never the key) put which event on order-shipped.
- rate_limits: sliding windows shared by every replica (Verify limits, per-key limits).
- callback_outbox.content_key: (MessageSid, MessageStatus, ErrorCode), what the
  signature covers, so a replay with a fresh idempotency token is still a duplicate.
- inbound_keywords / keyword_latest: an inbound STOP/START/HELP is applied once per
  MessageSid, and only when Twilio received it after the last one applied for the number.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _created_at() -> sa.Column[object]:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("client", sa.Text(), nullable=False),
        sa.Column("secret_hash", sa.Text(), nullable=False),
        sa.Column("event_kinds", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("rate_limit", sa.Integer(), nullable=False),
        sa.Column("rate_window_seconds", sa.Float(), nullable=False),
        _created_at(),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_table(
        "ingestions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("client", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_ingestions_event_id"), "ingestions", ["event_id"], unique=False)
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column(
            "hits",
            postgresql.ARRAY(sa.DateTime(timezone=True)),
            server_default="{}",
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_rate_limits_expires_at", "rate_limits", ["expires_at"], unique=False)
    op.add_column("callback_outbox", sa.Column("content_key", sa.Text(), nullable=True))
    op.create_unique_constraint(
        "callback_outbox_content_key_key", "callback_outbox", ["content_key"]
    )
    op.create_table(
        "inbound_keywords",
        sa.Column("message_sid", sa.Text(), nullable=False),
        sa.Column("phone_hash", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied", sa.Boolean(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("message_sid"),
    )
    op.create_table(
        "keyword_latest",
        sa.Column("phone_hash", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_sid", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("phone_hash"),
    )


def downgrade() -> None:
    op.drop_table("keyword_latest")
    op.drop_table("inbound_keywords")
    op.drop_constraint("callback_outbox_content_key_key", "callback_outbox", type_="unique")
    op.drop_column("callback_outbox", "content_key")
    op.drop_index("ix_rate_limits_expires_at", table_name="rate_limits")
    op.drop_table("rate_limits")
    op.drop_index(op.f("ix_ingestions_event_id"), table_name="ingestions")
    op.drop_table("ingestions")
    op.drop_table("api_keys")
