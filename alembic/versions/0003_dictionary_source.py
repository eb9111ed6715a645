"""Where a dictionary came from: trained here ("ours") or imported from SAELens or sparsify, with its metadata.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dictionaries") as batch:
        batch.add_column(sa.Column("source", sa.String(length=20), nullable=False, server_default="ours"))
        batch.add_column(sa.Column("source_metadata", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dictionaries") as batch:
        batch.drop_column("source_metadata")
        batch.drop_column("source")
