"""retention and erasure: the indexes pruning needs, the erasure audit

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 14:00:00

- deliveries.created_at (btree): pruning finds old rows without scanning the ledger;
  `created_at` never changes, so the index costs inserts only and leaves the claim
  path's HOT updates alone (an index on `updated_at` would not).
- deliveries.phone_hash (btree): `sms-relay forget` finds a number's rows.
- BRIN on status_history.recorded_at, callback_outbox.created_at, ingestions.received_at:
  these tables are written in time order, so a block-range index a few pages long finds
  the old rows.
- erasures: the audit of `sms-relay forget`, without the number.

IF NOT EXISTS: on a large ledger an operator may build the indexes beforehand with
CREATE INDEX CONCURRENTLY under the same names (docs/data-retention.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_INDEXES = (
    ("ix_deliveries_created_at", "deliveries", "created_at", "btree"),
    ("ix_deliveries_phone_hash", "deliveries", "phone_hash", "btree"),
    ("ix_status_history_recorded_at", "status_history", "recorded_at", "brin"),
    ("ix_callback_outbox_created_at", "callback_outbox", "created_at", "brin"),
    ("ix_ingestions_received_at", "ingestions", "received_at", "brin"),
)


def upgrade() -> None:
    for name, table, column, method in _INDEXES:
        op.create_index(name, table, [column], if_not_exists=True, postgresql_using=method)
    op.create_table(
        "erasures",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("operator", sa.Text(), nullable=False),
        sa.Column("removed", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "erased_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("erasures")
    for name, table, _column, _method in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
