"""Migrations: up and down on empty and filled databases, and agreement of the migrations with the models."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from app.db.migrate import MIGRATIONS_DIR, alembic_config, current_revision, downgrade, head_revision, upgrade_to_head
from app.db.models import Base
from app.db.session import make_engine
from app.services.ingest import ingest_run
from tests.db.builders import add_labels, label_rows, table_counts

HEAD = "0006"
SCHEMA_TABLES = {"vocabularies", "dictionaries", "features", "examples", "labels"}

# A later migration that alters the two tables other rows point to, as SQLite batch mode does: by copying.
EXTRA_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("features") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))
    with op.batch_alter_table("labels") as batch:
        batch.add_column(sa.Column("source", sa.String(20), nullable=True))


def downgrade():
    with op.batch_alter_table("labels") as batch:
        batch.drop_column("source")
    with op.batch_alter_table("features") as batch:
        batch.drop_column("note")
"""


def schema_differences(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def some_labels() -> list[dict]:
    return [
        {
            "dictionary_hash": "a" * 64,
            "feature_index": i,
            "labeller": "ada",
            "verdict": "monosemantic",
            "description": f"feature {i}",
            "confidence": 0.5,
            "created_at": datetime(2024, 1, 1, 12, i),
        }
        for i in range(3)
    ]


def test_upgrade_of_an_empty_database_creates_exactly_the_models_schema(database_url):
    assert current_revision(database_url) is None
    assert upgrade_to_head(database_url) == head_revision() == HEAD
    assert tables(database_url) == SCHEMA_TABLES | {"alembic_version"}
    assert schema_differences(database_url) == []


def test_downgrade_to_base_removes_the_schema_and_upgrade_restores_it(database_url):
    upgrade_to_head(database_url)
    assert downgrade(database_url, "base") is None
    assert tables(database_url) == {"alembic_version"}
    assert upgrade_to_head(database_url) == HEAD
    assert schema_differences(database_url) == []


def test_upgrading_a_filled_database_again_keeps_every_row(database_url, built_run):
    upgrade_to_head(database_url)
    engine = make_engine(database_url)
    ingest_run(engine, built_run.run_dir)
    add_labels(engine, some_labels())
    counts, labels = table_counts(engine), label_rows(engine)
    assert counts["examples"] > 0 and counts["labels"] == 3

    assert upgrade_to_head(database_url) == HEAD
    assert table_counts(engine) == counts
    assert label_rows(engine) == labels
    engine.dispose()


def test_a_later_migration_that_copies_tables_keeps_labels_features_and_examples(database_url, built_run, tmp_path):
    scripts = tmp_path / "alembic"
    shutil.copytree(MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "9999_extra.py").write_text(EXTRA_REVISION.format(head=head_revision()))
    upgrade_to_head(database_url)
    engine = make_engine(database_url)
    ingest_run(engine, built_run.run_dir)
    add_labels(engine, some_labels())
    counts, labels = table_counts(engine), label_rows(engine)

    assert upgrade_to_head(database_url, scripts) == "9999"
    assert "note" in {c["name"] for c in inspect(engine).get_columns("features")}
    assert table_counts(engine) == counts  # features were copied without cascading into examples
    assert label_rows(engine) == labels

    assert downgrade(database_url, HEAD, scripts) == HEAD
    assert table_counts(engine) == counts
    assert label_rows(engine) == labels
    assert schema_differences(database_url) == []
    engine.dispose()


def test_migrating_works_from_any_working_directory(database_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert upgrade_to_head(database_url) == HEAD


def test_the_environment_takes_the_url_from_the_environment_variable(database_url, monkeypatch):
    from alembic import command

    config = alembic_config("")
    del config.attributes["database_url"]
    monkeypatch.setenv("MONOSEMANTIC_DATABASE_URL", database_url)
    command.upgrade(config, "head")
    assert current_revision(database_url) == HEAD


def test_missing_migration_scripts_are_a_clear_error(database_url, tmp_path):
    with pytest.raises(FileNotFoundError, match="no migration scripts"):
        upgrade_to_head(database_url, Path(tmp_path / "nowhere"))


def test_upgrading_from_0001_keeps_labels_and_marks_features_that_never_fired_dead(database_url, built_run):
    from alembic import command

    command.upgrade(alembic_config(database_url), "0001")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO vocabularies (id, content_hash, tokens) VALUES (1, 'v', '[]');"))
        conn.execute(
            sa.text(
                "INSERT INTO dictionaries (id, content_hash, name, run_dir, artifact_dir, model, site, arch, dict_size,"
                " sparsity_key, sparsity_value, alive, dead, n_tokens, vocabulary_id, indexed_at)"
                " VALUES (1, 'h', 'd', '.', '.', 'tinylm', 'mlp_post', 'relu', 2, 'l1', 0.1, 1, 1, 10, 1, '2024-01-01')"
            )
        )
        for index, alive in ((0, "TRUE"), (1, "FALSE")):
            conn.execute(
                sa.text(
                    'INSERT INTO features (dictionary_id, "index", alive, density, mean_activation, max_activation,'
                    " top_token_text, histogram, top_tokens, logit_promoted, logit_suppressed, pos_tags, neighbours)"
                    f" VALUES (1, {index}, {alive}, 0, 0, 0, '', '{{}}', '[]', '[]', '[]', '[]', '[]')"
                )
            )
    add_labels(engine, some_labels())
    before = (
        "SELECT id, dictionary_hash, feature_index, labeller, verdict, description, confidence, created_at FROM labels"
    )
    with engine.connect() as conn:
        labels = [tuple(row) for row in conn.execute(sa.text(before + " ORDER BY id"))]
    assert len(labels) == 3

    assert upgrade_to_head(database_url) == HEAD
    with engine.connect() as conn:
        assert [tuple(row) for row in conn.execute(sa.text(before + " ORDER BY id"))] == labels
    assert all(row[-1] is None for row in label_rows(engine))  # the top-contexts reading was never recorded
    with engine.connect() as conn:
        evidence = conn.execute(sa.text('SELECT "index", evidence FROM features ORDER BY "index"')).all()
        rare = conn.execute(sa.text("SELECT rare FROM dictionaries")).scalar_one()
    assert [tuple(row) for row in evidence] == [(0, "alive"), (1, "dead")] and rare == 0
    engine.dispose()
