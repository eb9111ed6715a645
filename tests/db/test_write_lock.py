"""Writers of one server take turns on a lock per SQLite database, so none of them sleeps in SQLite's busy
handler; other databases (PostgreSQL) have concurrent writers and get no lock."""

from __future__ import annotations

import threading
from contextlib import nullcontext
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from app.db.session import make_engine, make_sessionmaker, serialized_writes


def test_sessions_of_one_sqlite_database_share_one_lock(tmp_path: Path) -> None:
    first, second = make_engine(f"sqlite:///{tmp_path / 'a.db'}"), make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    other = make_engine(f"sqlite:///{tmp_path / 'b.db'}")
    with make_sessionmaker(first)() as a, make_sessionmaker(second)() as b, make_sessionmaker(other)() as c:
        lock = serialized_writes(a)
        assert isinstance(lock, type(threading.Lock())) and serialized_writes(b) is lock
        assert serialized_writes(c) is not lock
        with lock:  # a second writer of the same database waits for the first
            assert not serialized_writes(b).acquire(blocking=False)


def test_other_databases_get_no_lock() -> None:
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # never connected
    with Session(engine) as session:
        assert isinstance(serialized_writes(session), nullcontext)
