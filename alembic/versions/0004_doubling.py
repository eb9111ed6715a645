"""Whether a dictionary's numbers hold when its training rows double, and what moved when they do not.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dictionaries") as batch:
        batch.add_column(sa.Column("holds", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("moved", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dictionaries") as batch:
        batch.drop_column("moved")
        batch.drop_column("holds")
