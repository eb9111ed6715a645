"""Fixtures of the app tests: a fresh app over a migrated SQLite file filled by ``build_database``."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.settings import Settings
from app.web.factory import create_app
from tests.app.builders import BuiltDatabase, build_database


def make_app(workdir: Path, **settings) -> FastAPI:
    """An app whose database is a new SQLite file in workdir, with a seeded random generator."""
    app = create_app(Settings(workdir=workdir, database_url=f"sqlite:///{workdir / 'test.db'}", **settings))
    app.state.rng = random.Random(0)
    return app


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    return make_app(tmp_path)


@pytest.fixture
def built(app: FastAPI) -> BuiltDatabase:
    with app.state.sessionmaker() as session:
        return build_database(session)


@pytest.fixture
def session(app: FastAPI) -> Iterator[Session]:
    with app.state.sessionmaker() as session:
        yield session


@pytest.fixture
def client(app: FastAPI, built: BuiltDatabase) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client
