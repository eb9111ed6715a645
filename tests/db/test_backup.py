"""Online backup of the SQLite database: a consistent, self-contained copy that passes its integrity check."""

from __future__ import annotations

import sqlite3

import pytest

from app.db.backup import backup_sqlite
from app.db.migrate import head_revision
from app.services.ingest import ingest_run
from tests.db.builders import add_labels, table_counts
from tests.db.test_labels_io import LABELS


def rows_of(path, table: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


def test_a_backup_has_the_same_rows_and_passes_the_integrity_check(engine, database_url, built_run, tmp_path):
    ingest_run(engine, built_run.run_dir)
    add_labels(engine, LABELS)
    source = database_url.removeprefix("sqlite:///")
    out = tmp_path / "backup.db"
    result = backup_sqlite(database_url, out)
    assert result.path == out and result.bytes == out.stat().st_size > 0
    assert {t: n for t, n in result.rows.items() if t != "alembic_version"} == table_counts(engine)
    for table in ("labels", "features", "examples", "dictionaries", "vocabularies"):
        assert rows_of(out, table) == rows_of(source, table)
    with sqlite3.connect(out) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # one file, no -wal beside it
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (head_revision(),)
    assert not (tmp_path / "backup.db.partial").exists()


def test_a_write_in_progress_is_not_in_the_backup_and_does_not_block_it(engine, database_url, tmp_path):
    add_labels(engine, LABELS[:1])
    writer = sqlite3.connect(database_url.removeprefix("sqlite:///"))
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE labels SET verdict = 'polysemantic'")
    try:
        backup_sqlite(database_url, tmp_path / "backup.db")
    finally:
        writer.rollback()
        writer.close()
    assert [row[4] for row in rows_of(tmp_path / "backup.db", "labels")] == ["monosemantic"]


def test_backing_up_over_an_old_backup_replaces_it(engine, database_url, tmp_path):
    out = tmp_path / "backup.db"
    backup_sqlite(database_url, out)
    add_labels(engine, LABELS)
    backup_sqlite(database_url, out)
    assert len(rows_of(out, "labels")) == 3


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://user:secret@localhost/monosemantic", "pg_dump"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
    ],
)
def test_databases_it_cannot_copy_are_refused_with_the_alternative(url, expected, tmp_path):
    with pytest.raises(ValueError, match=expected):
        backup_sqlite(url, tmp_path / "backup.db")


def test_a_missing_database_is_an_error_and_is_not_created(tmp_path):
    missing = tmp_path / "missing.db"
    with pytest.raises(ValueError, match="no database at"):
        backup_sqlite(f"sqlite:///{missing}", tmp_path / "backup.db")
    assert not missing.exists()


def test_the_backup_cannot_overwrite_the_database_itself(engine, database_url):
    path = database_url.removeprefix("sqlite:///")
    with pytest.raises(ValueError, match="is the database itself"):
        backup_sqlite(database_url, path)
