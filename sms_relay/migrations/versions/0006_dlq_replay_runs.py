"""dlq replay runs: resumable replays of a big DLQ, and the audit says which run replayed what

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 14:00:00

- dlq_replay_runs: one row per `sms-relay dlq replay` that replays (dry runs write none):
  its filters, the end offsets it reads to (taken at its start), and per partition the
  next offset to read, advanced in the same transaction as the replays it covers, so
  `dlq replay --resume RUN` goes on exactly where an interrupted run stopped.
- dlq_replays.run_id: the run that wrote the audit row (NULL for rows written before).
- ix_dlq_replays_record: how often one DLQ record was replayed, asked a page at a time.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _at(name: str, nullable: bool = False) -> sa.Column[object]:
    default = None if nullable else sa.text("now()")
    return sa.Column(name, sa.DateTime(timezone=True), server_default=default, nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "dlq_replay_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("dlq_topic", sa.Text(), nullable=False),
        sa.Column("target_topic", sa.Text(), nullable=False),
        sa.Column("operator", sa.Text(), nullable=False),
        sa.Column("options", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("end_offsets", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("positions", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("matched", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("replayed", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("outcome", sa.Text(), server_default=sa.text("'running'"), nullable=False),
        _at("started_at"),
        _at("updated_at"),
        _at("finished_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.add_column("dlq_replays", sa.Column("run_id", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_dlq_replays_record",
        "dlq_replays",
        ["dlq_topic", "dlq_partition", "dlq_offset"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_dlq_replays_record", table_name="dlq_replays")
    op.drop_column("dlq_replays", "run_id")
    op.drop_table("dlq_replay_runs")
