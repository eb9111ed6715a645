"""Evidence levels and the second reading of a verdict.

Dictionaries gain ``rare`` and the evidence criteria they were classified with; ``alive`` now counts the
features with enough evidence. Features gain ``evidence`` ("dead", "rare" or "alive"), ``fire_count`` and
``max_contribution``; ``alive`` now means enough evidence. Rows indexed before this revision keep their old
counts (fired = alive, rare 0) until ``monosemantic index`` reloads them. Labels gain
``top_contexts_monosemantic``: whether one concept covers the top contexts (the looser reading of
"monosemantic"; the verdict is the stricter one, across the activation range).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dictionaries") as batch:
        batch.add_column(sa.Column("rare", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("min_firings", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("min_contribution", sa.Float(), nullable=True))
    with op.batch_alter_table("features") as batch:
        batch.add_column(sa.Column("evidence", sa.String(length=5), nullable=False, server_default="alive"))
        batch.add_column(sa.Column("fire_count", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_contribution", sa.Float(), nullable=True))
    features = sa.table("features", sa.column("alive", sa.Boolean()), sa.column("evidence", sa.String()))
    op.execute(features.update().where(features.c.alive == sa.false()).values(evidence="dead"))
    with op.batch_alter_table("labels") as batch:
        batch.add_column(sa.Column("top_contexts_monosemantic", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("labels") as batch:
        batch.drop_column("top_contexts_monosemantic")
    with op.batch_alter_table("features") as batch:
        batch.drop_column("max_contribution")
        batch.drop_column("fire_count")
        batch.drop_column("evidence")
    with op.batch_alter_table("dictionaries") as batch:
        batch.drop_column("min_contribution")
        batch.drop_column("min_firings")
        batch.drop_column("rare")
