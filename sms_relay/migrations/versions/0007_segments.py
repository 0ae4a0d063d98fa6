"""segments: what a sent body cost

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-10 09:00:00

- deliveries.segments, deliveries.encoding: the parts (segments) and the encoding
  (`GSM-7` or `UCS-2`) of the rendered body, recorded when a send settles; NULL on rows
  that never rendered one (suppressed at the claim) and on rows from before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("segments", sa.Integer()))
    op.add_column("deliveries", sa.Column("encoding", sa.Text()))


def downgrade() -> None:
    op.drop_column("deliveries", "encoding")
    op.drop_column("deliveries", "segments")
