"""Migrations: up and down on empty and filled databases, and agreement of the migrations with the models."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from app.db.migrate import MIGRATIONS_DIR, alembic_config, current_revision, downgrade, head_revision, upgrade_to_head
from app.db.models import Base
from app.db.session import make_engine
from app.ingest import ingest_run
from tests.db.builders import add_labels, label_rows, table_counts

HEAD = "0003"
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
