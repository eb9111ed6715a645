"""Schema migrations run from code: the app and ``monosemantic db upgrade`` bring a database to head.

The migration scripts live in the repository's top-level ``alembic/`` folder, found relative to this
package so migrating works from any working directory and from an editable install of a checkout.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from app.db.session import make_engine

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "alembic"


def alembic_config(url: str, script_location: Path | None = None) -> Config:
    """An Alembic config built in code that migrates url with the scripts in script_location."""
    location = Path(script_location or MIGRATIONS_DIR)
    if not (location / "env.py").is_file():
        raise FileNotFoundError(
            f"no migration scripts in {location}: run from a checkout of the repository (pip install -e .)"
        )
    config = Config()
    # The config is an INI parser: a literal % in the path must be doubled.
    config.set_main_option("script_location", str(location).replace("%", "%%"))
    config.attributes["database_url"] = url
    return config


def upgrade_to_head(url: str, script_location: Path | None = None) -> str | None:
    """Apply every pending migration to the database at url; the revision it is at afterwards."""
    command.upgrade(alembic_config(url, script_location), "head")
    return current_revision(url)


def downgrade(url: str, revision: str, script_location: Path | None = None) -> str | None:
    """Undo migrations down to revision ("base" removes the whole schema); the revision afterwards."""
    command.downgrade(alembic_config(url, script_location), revision)
    return current_revision(url)


def current_revision(url: str) -> str | None:
    """The revision the database at url is at (None for a database never migrated)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision(script_location: Path | None = None) -> str | None:
    """The newest revision of the migration scripts."""
    return ScriptDirectory.from_config(alembic_config("", script_location)).get_current_head()
