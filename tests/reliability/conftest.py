"""Fixtures of the reliability tests: PostgreSQL databases when a server is given, and the app served for real.

PostgreSQL: ``MONOSEMANTIC_TEST_POSTGRES_URL`` names a database on a server where that role may create
databases (``bash .ci/start-postgres`` starts one on loopback and prints such a URL). Each test session
creates a fresh database there and drops it at the end; each test gets its own schema inside it (a
``search_path`` in the URL), so tests never see each other's rows. ``make test`` starts the server and
sets the variable; without it the PostgreSQL variants fail, saying how to start one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from app.db.migrate import upgrade_to_head
from app.db.session import make_engine, make_sessionmaker
from tests.app.builders import BuiltDatabase, build_database

POSTGRES_URL_ENV = "MONOSEMANTIC_TEST_POSTGRES_URL"
REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_START_TIMEOUT_S = 30


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """URL of a fresh PostgreSQL database for this test session, dropped at its end."""
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        pytest.fail(
            f"{POSTGRES_URL_ENV} is not set: run the tests with `make test`, which starts PostgreSQL on loopback, "
            f"or start it with `bash .ci/start-postgres` and export {POSTGRES_URL_ENV}=<the URL it prints>"
        )
    name = f"monosemantic_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    """URL of an empty schema of the session's PostgreSQL database, this test's alone."""
    return new_schema_url(postgres_database)


def new_schema_url(database_url: str) -> str:
    """Create an empty schema in the PostgreSQL database and give a URL whose connections work inside it."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    finally:
        engine.dispose()
    return (
        make_url(database_url)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend: a SQLite file, and a PostgreSQL schema when a server is given."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'monosemantic.db'}"
    return request.getfixturevalue("postgres_url")


def build_app_database(url: str) -> BuiltDatabase:
    """Migrate the database at url to head and fill it with ``tests.app.builders.build_database``."""
    upgrade_to_head(url)
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            return build_database(session)
    finally:
        engine.dispose()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServedApp:
    """``monosemantic serve`` running in a child process on a loopback port."""

    process: subprocess.Popen
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def start_server(database_url: str, workdir: Path, extra_env: dict[str, str] | None = None) -> ServedApp:
    """Start ``python -m app serve`` over database_url and wait until ``/api/health`` answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / f"server-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONOSEMANTIC_")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(extra_env or {})})
    command = [sys.executable, "-m", "app", "serve", "--db", database_url, "--workdir", str(workdir)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    served = ServedApp(process=process, base_url=f"http://127.0.0.1:{port}", log_path=log_path)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}:\n{served.log()}")
        try:
            if httpx.get(f"{served.base_url}/api/health", timeout=1).status_code == 200:
                return served
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop_server(served)
    raise RuntimeError(f"the server did not answer within {SERVER_START_TIMEOUT_S} s:\n{served.log()}")


def stop_server(served: ServedApp) -> None:
    """Stop the server (SIGTERM, then SIGKILL after 10 s) and reap it."""
    if served.process.poll() is None:
        served.process.terminate()
        try:
            served.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait()
