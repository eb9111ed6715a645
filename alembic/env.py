"""Alembic environment: migrates the app's schema (``app.db.models``) on the database the caller names.

The URL comes from ``config.attributes["database_url"]`` (set by ``app.db.migrate``), else the environment
variable ``MONOSEMANTIC_DATABASE_URL``, else ``sqlalchemy.url`` in the config. A caller may also hand over an
open connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from app.db.models import Base
from app.db.session import make_engine

URL_ENV = "MONOSEMANTIC_DATABASE_URL"

config = context.config
target_metadata = Base.metadata

# Only the `alembic` command line configures logging from alembic.ini; code that migrates keeps its own.
if config.config_file_name is not None and "database_url" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    """The URL to migrate, from the caller, the environment or the config, in that order."""
    url = config.attributes.get("database_url") or os.environ.get(URL_ENV) or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(f"no database to migrate: set {URL_ENV} or run `monosemantic db upgrade --db URL`")
    return url


def run_migrations_offline() -> None:
    """Emit the migration SQL for the URL without connecting (``alembic upgrade --sql``)."""
    url = database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_on(connection: Connection) -> None:
    """Run the migrations on an open connection (SQLite: in batch mode, which alters a table by copying it)."""
    sqlite = connection.dialect.name == "sqlite"
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=sqlite)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate on the caller's connection, or connect to the URL and migrate.

    On SQLite foreign keys are off while migrating: dropping the old copy of a referenced table in batch
    mode would otherwise cascade-delete the rows that point to it. (A caller's connection is the caller's
    to set up.)
    """
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    engine = make_engine(database_url())
    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
                connection.commit()
            run_on(connection)
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
