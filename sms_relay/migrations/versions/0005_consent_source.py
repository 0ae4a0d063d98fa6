"""consent: where it was given

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 09:00:00

- deliveries.consent_source: where the recipient consented (a form, a checkout, a
  keyword: a label the event carries as `consentSource`, never personal data), stored
  beside the consent instant and purpose.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("consent_source", sa.Text()))


def downgrade() -> None:
    op.drop_column("deliveries", "consent_source")
