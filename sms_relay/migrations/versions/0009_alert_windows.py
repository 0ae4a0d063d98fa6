"""alert windows: flood control for incident alerts

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 15:00:00

- alert_windows: one row per alert that opened a collapse window (the event, the number's
  keyed hash, the alert key's keyed hash, when): decides one SMS per (number, alert key)
  per window and the cap per number and hour. Kept a day (docs/data-retention.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_windows",
        sa.Column("event_id", sa.Text(), primary_key=True),
        sa.Column("phone_hash", sa.Text(), nullable=False),
        sa.Column("key_hash", sa.Text(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_alert_windows_number", "alert_windows", ["phone_hash", "opened_at"])


def downgrade() -> None:
    op.drop_table("alert_windows")
