"""ledger: remembered doubt, bodies actually sent, the consumer's own settled step

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 20:10:00

- doubt_since: a send may have created a message that is not yet matched (set at the
  end of each uncertain attempt, cleared only when resolved). Every later claim
  reconciles first while it is set, whatever the state it comes from (retry tier, DLQ
  replay, crash recovery). The settling window is counted from it.
- sent_body_hashes: the hashes of every body actually sent, so reconciliation matches
  what went out, not today's rendering.
- settled_state: the step the consumer itself settled (accepted, failed, suppressed,
  dead_lettered). `reported` now refers to it, so a callback that moves `state` on
  before the consumer published its step cannot hide that step.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("doubt_since", sa.DateTime(timezone=True)))
    op.add_column(
        "deliveries",
        sa.Column(
            "sent_body_hashes",
            postgresql.ARRAY(sa.Text()),
            server_default="{}",
            nullable=False,
        ),
    )
    op.add_column("deliveries", sa.Column("settled_state", sa.Text()))
    op.execute(
        "UPDATE deliveries SET sent_body_hashes = ARRAY[body_hash] WHERE body_hash IS NOT NULL"
    )
    op.execute(
        "UPDATE deliveries SET settled_state = CASE WHEN state IN "
        "('failed', 'suppressed', 'dead_lettered') THEN state ELSE 'accepted' END "
        "WHERE message_sid IS NOT NULL OR state IN ('failed', 'suppressed', 'dead_lettered')"
    )
    op.drop_column("deliveries", "body_hash")
    op.create_index(
        "ix_deliveries_in_doubt",
        "deliveries",
        ["doubt_since"],
        postgresql_where=sa.text("doubt_since IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_in_doubt", table_name="deliveries")
    op.add_column("deliveries", sa.Column("body_hash", sa.Text()))
    op.execute(
        "UPDATE deliveries SET body_hash = sent_body_hashes[array_upper(sent_body_hashes, 1)]"
    )
    op.drop_column("deliveries", "settled_state")
    op.drop_column("deliveries", "sent_body_hashes")
    op.drop_column("deliveries", "doubt_since")
