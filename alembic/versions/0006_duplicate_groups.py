"""Distinct features: each alive feature names the representative of its group of near-duplicates.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("features") as batch:
        batch.add_column(sa.Column("group_index", sa.Integer(), nullable=True))
        batch.create_index("ix_features_dictionary_group", ["dictionary_id", "group_index"])


def downgrade() -> None:
    with op.batch_alter_table("features") as batch:
        batch.drop_index("ix_features_dictionary_group")
        batch.drop_column("group_index")
