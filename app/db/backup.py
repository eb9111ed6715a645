"""Consistent backups of the app's SQLite database while the app may be writing to it."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from app.db.session import SQLITE_BUSY_TIMEOUT_MS


@dataclass
class BackupResult:
    """Where a backup was written, its size, and the tables' row counts in it."""

    path: Path
    bytes: int
    rows: dict[str, int]


def sqlite_path(url: str) -> Path:
    """The file of a SQLite URL; a ValueError for other databases or in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise ValueError(
            f"backup copies SQLite databases only, not {parsed.get_backend_name()}: "
            "back up PostgreSQL with pg_dump (e.g. pg_dump --format=custom DBNAME > monosemantic.dump)"
        )
    if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file::memory:"):
        raise ValueError(f"{url} is an in-memory database: there is no file to back up")
    return Path(parsed.database)


def backup_sqlite(url: str, out_path: Path) -> BackupResult:
    """Copy the SQLite database at url into out_path with SQLite's online backup API.

    The copy is a consistent snapshot even while others write (pages changed during the copy are
    re-copied), is written beside out_path and renamed into place only after it passes
    ``PRAGMA integrity_check``, and uses a rollback journal so it is one self-contained file.
    """
    source_path = sqlite_path(url)
    if not source_path.is_file():
        raise ValueError(f"no database at {source_path}: pass --db URL or run `monosemantic index` first")
    out_path = Path(out_path)
    if out_path.exists() and out_path.resolve() == source_path.resolve():
        raise ValueError(f"{out_path} is the database itself: choose another --out")
    if not out_path.parent.is_dir():
        raise ValueError(f"folder {out_path.parent} does not exist: create it or choose another --out")
    partial = out_path.with_name(out_path.name + ".partial")
    partial.unlink(missing_ok=True)
    # mode=rw: never create an empty database where the path is wrong (a plain connect would).
    source_uri = f"{source_path.resolve().as_uri()}?mode=rw"
    source = sqlite3.connect(source_uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
    try:
        target = sqlite3.connect(partial)
        try:
            source.backup(target, pages=1024)
            target.execute("PRAGMA journal_mode=DELETE")
            verdict = target.execute("PRAGMA integrity_check").fetchone()[0]
            if verdict != "ok":
                raise ValueError(f"backup of {source_path} failed its integrity check: {verdict}")
            tables = [
                name
                for (name,) in target.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
                )
            ]
            rows = {name: target.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in tables}
        finally:
            target.close()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        source.close()
    os.replace(partial, out_path)
    return BackupResult(path=out_path, bytes=out_path.stat().st_size, rows=rows)
