"""Initial schema: vocabularies, dictionaries, features, examples and labels (as in app/db/models.py).

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vocabularies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("tokens", sa.JSON(), nullable=False),
        sa.Column("tag_vocab", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("content_hash"),
    )
    op.create_table(
        "dictionaries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("run_dir", sa.Text(), nullable=False),
        sa.Column("artifact_dir", sa.Text(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("layer", sa.Integer(), nullable=True),
        sa.Column("site", sa.String(length=100), nullable=False),
        sa.Column("arch", sa.String(length=50), nullable=False),
        sa.Column("dict_size", sa.Integer(), nullable=False),
        sa.Column("sparsity_key", sa.String(length=10), nullable=False),
        sa.Column("sparsity_value", sa.Float(), nullable=False),
        sa.Column("alive", sa.Integer(), nullable=False),
        sa.Column("dead", sa.Integer(), nullable=False),
        sa.Column("l0", sa.Float(), nullable=True),
        sa.Column("fvu", sa.Float(), nullable=True),
        sa.Column("ce_recovered", sa.Float(), nullable=True),
        sa.Column("n_tokens", sa.Integer(), nullable=False),
        sa.Column("vocabulary_id", sa.Integer(), nullable=False),
        sa.Column("indexed_at", sa.DateTime(), nullable=False),
        sa.Column("artifact_fingerprint", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["vocabulary_id"], ["vocabularies.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("content_hash"),
    )
    op.create_table(
        "features",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dictionary_id", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("alive", sa.Boolean(), nullable=False),
        sa.Column("density", sa.Float(), nullable=False),
        sa.Column("mean_activation", sa.Float(), nullable=False),
        sa.Column("max_activation", sa.Float(), nullable=False),
        sa.Column("mmcs_with_larger", sa.Float(), nullable=True),
        sa.Column("top_token_text", sa.Text(), nullable=False),
        sa.Column("histogram", sa.JSON(), nullable=False),
        sa.Column("top_tokens", sa.JSON(), nullable=False),
        sa.Column("logit_promoted", sa.JSON(), nullable=False),
        sa.Column("logit_suppressed", sa.JSON(), nullable=False),
        sa.Column("pos_tags", sa.JSON(), nullable=False),
        sa.Column("neighbours", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["dictionary_id"], ["dictionaries.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dictionary_id", "index", name="uq_feature_dictionary_index"),
    )
    op.create_index("ix_features_dictionary_density", "features", ["dictionary_id", "density"])
    op.create_index("ix_features_dictionary_max", "features", ["dictionary_id", "max_activation"])
    op.create_table(
        "examples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("feature_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("quantile", sa.Integer(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("center", sa.Integer(), nullable=False),
        sa.Column("token_ids", sa.LargeBinary(), nullable=False),
        sa.Column("activations", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["feature_id"], ["features.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_examples_feature", "examples", ["feature_id"])
    op.create_table(
        "labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dictionary_hash", sa.String(length=64), nullable=False),
        sa.Column("feature_index", sa.Integer(), nullable=False),
        sa.Column("labeller", sa.String(length=64), nullable=False),
        sa.Column("verdict", sa.String(length=20), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_labels_feature", "labels", ["dictionary_hash", "feature_index"])


def downgrade() -> None:
    op.drop_index("ix_labels_feature", table_name="labels")
    op.drop_table("labels")
    op.drop_index("ix_examples_feature", table_name="examples")
    op.drop_table("examples")
    op.drop_index("ix_features_dictionary_max", table_name="features")
    op.drop_index("ix_features_dictionary_density", table_name="features")
    op.drop_table("features")
    op.drop_table("dictionaries")
    op.drop_table("vocabularies")
