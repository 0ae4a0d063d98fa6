"""scheduled sends and remembered cancels

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10 09:00:00

- scheduled_sends: an event stored to be sent later (an appointment reminder before its
  `sendAt`, or inside quiet hours), with what the scheduler needs to send it; deleted when
  the event settles.
- appointment_cancellations: the cancels, so a reminder read after its cancel still ends
  `canceled`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    now = sa.func.now()
    op.create_table(
        "scheduled_sends",
        sa.Column("event_id", sa.Text(), primary_key=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("phone_hash", sa.Text(), nullable=False),
        sa.Column("cancel_key", sa.Text()),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("taken_until", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
    )
    op.create_index("ix_scheduled_sends_due_at", "scheduled_sends", ["due_at"])
    op.create_index("ix_scheduled_sends_phone_hash", "scheduled_sends", ["phone_hash"])
    op.create_index("ix_scheduled_sends_cancel_key", "scheduled_sends", ["cancel_key"])
    op.create_table(
        "appointment_cancellations",
        sa.Column("cancel_key", sa.Text(), primary_key=True),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
    )
    op.create_index(
        "ix_appointment_cancellations_created_at", "appointment_cancellations", ["created_at"]
    )


def downgrade() -> None:
    op.drop_table("appointment_cancellations")
    op.drop_table("scheduled_sends")
