"""Engines and sessions for the app's database: SQLite by default (WAL, busy timeout), any SQLAlchemy URL."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_POOL_SIZE = 40  # anyio's default thread pool, which serves FastAPI's sync routes
_WRITE_LOCKS: dict[str, threading.Lock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def default_database_url(workdir: Path) -> str:
    """The SQLite file the app uses inside a run directory when no URL is given."""
    return f"sqlite:///{(Path(workdir) / 'monosemantic.db').resolve()}"


def make_engine(url: str) -> Engine:
    """An engine for url; SQLite connections get WAL journaling, a busy timeout and foreign keys."""
    if url.startswith("sqlite"):
        # A pool as large as the server's worker threads, so connections (and their PRAGMAs) are reused.
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            pool_size=SQLITE_POOL_SIZE,
            max_overflow=SQLITE_POOL_SIZE,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to engine that keep loaded attributes readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def serialized_writes(session: Session) -> AbstractContextManager:
    """This process's write lock of the session's SQLite database, to hold around a commit (no-op elsewhere).

    SQLite lets one connection write at a time, and a thread that finds the database locked waits in its
    busy handler, which sleeps in steps of up to 100 ms: under a team of labellers that made the slowest
    label POSTs wait a quarter of a second. Threads of one server take turns on this lock instead, so only
    writers in other processes ever wait in SQLite.
    """
    url = session.get_bind().url
    if url.get_backend_name() != "sqlite":
        return nullcontext()
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(str(url), threading.Lock())
