"""Fixtures of the database tests: a migrated SQLite file per test and a small run directory to ingest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from app.db.migrate import upgrade_to_head
from app.db.session import make_engine
from tests.db.builders import BuiltRun, build_run


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A SQLite file URL, not yet migrated."""
    return f"sqlite:///{tmp_path / 'monosemantic.db'}"


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a database migrated to head."""
    upgrade_to_head(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def built_run(tmp_path: Path) -> BuiltRun:
    """A run directory with two indexed dictionaries (8 and 16 features) of one relu sweep."""
    return build_run(tmp_path / "run")
