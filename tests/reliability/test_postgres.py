"""The database tests again, on PostgreSQL: migrations up and down, ingest and re-index, label import and export,
and the REST API's reads and label writes.

Each test of the listed modules that touches a database is collected here a second time; the fixtures
below give it a PostgreSQL schema of its own (see ``conftest.postgres_url``) where the originals use a
SQLite file, so one test body checks both backends. Without ``MONOSEMANTIC_TEST_POSTGRES_URL`` (``make test``
sets it) they fail. The concurrent-labellers test runs on both backends through ``backend_url``.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

import tests.app.test_api_labels
import tests.app.test_api_read
import tests.db.test_ingest
import tests.db.test_labels_io
import tests.db.test_migrations
from app.db.migrate import upgrade_to_head
from app.db.session import make_engine
from app.settings import Settings
from app.web.factory import create_app
from tests.app.conftest import built, client, session  # noqa: F401  the API tests' fixtures, over this app
from tests.db.builders import BuiltRun, build_run
from tests.reliability.conftest import new_schema_url

DATABASE_FIXTURES = {"database_url", "engine", "other_engine", "app", "client", "session", "built"}
NOT_HERE = {
    # SQLite-only: hands the driver SQLite's positional INSERT directly (PostgreSQL always takes the Core path).
    "test_the_direct_and_the_core_bulk_insert_store_the_same_examples",
    # Answered by request validation before any query: the backend cannot change them.
    "test_invalid_labels_are_422_naming_the_field_and_not_stored",
    "test_features_reject_bad_parameters_naming_the_field",
    "test_next_feature_needs_a_labeller",
    "test_openapi_declares_every_api_route_with_a_response_schema",
}


def database_tests(*modules: ModuleType) -> dict[str, Callable]:
    """The test functions of modules that use a database fixture, by name."""
    found: dict[str, Callable] = {}
    for module in modules:
        for name, test in vars(module).items():
            if not name.startswith("test_") or not callable(test) or name in NOT_HERE:
                continue
            if DATABASE_FIXTURES & set(inspect.signature(test).parameters):
                assert name not in found, f"two database tests are named {name}"
                found[name] = test
    return found


globals().update(
    database_tests(
        tests.db.test_migrations,
        tests.db.test_ingest,
        tests.db.test_labels_io,
        tests.app.test_api_labels,
        tests.app.test_api_read,
    )
)


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """An empty PostgreSQL schema, not yet migrated."""
    return postgres_url


def migrated_engine(url: str) -> Iterator[Engine]:
    upgrade_to_head(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    yield from migrated_engine(database_url)


@pytest.fixture
def other_engine(postgres_database: str) -> Iterator[Engine]:
    """A second migrated schema, for copying labels between databases."""
    yield from migrated_engine(new_schema_url(postgres_database))


@pytest.fixture
def built_run(tmp_path: Path) -> BuiltRun:
    return build_run(tmp_path / "run")


@pytest.fixture
def app(tmp_path: Path, database_url: str) -> FastAPI:
    app = create_app(Settings(workdir=tmp_path, database_url=database_url))
    app.state.rng = random.Random(0)
    return app


def test_feature_views_read_through_the_thread_pool_on_postgresql(app: FastAPI) -> None:
    """A database server is a network round trip away (or hangs while down): no reads on the event loop."""
    assert app.state.inline_reads is False
