"""POST /api/labels/import refuses a body past the server's limit with a 413 naming it, and writes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.db.models import Label
from app.settings import Settings
from tests.app.builders import build_database
from tests.app.conftest import make_app

LIMIT = 500


@pytest.fixture
def limited(tmp_path: Path) -> FastAPI:
    app = make_app(tmp_path, labels_import_max_bytes=LIMIT)
    with app.state.sessionmaker() as session:
        build_database(session)
    return app


def rows(n: int) -> bytes:
    lines = [
        json.dumps({"dictionary": "a" * 64, "index": i, "labeller": "ann", "verdict": "monosemantic"}) for i in range(n)
    ]
    return ("\n".join(lines) + "\n").encode()


def label_count(app: FastAPI) -> int:
    with app.state.sessionmaker() as session:
        return session.scalar(select(func.count()).select_from(Label))


def test_a_body_within_the_limit_is_imported(limited: FastAPI) -> None:
    body = rows(3)
    assert len(body) <= LIMIT
    with TestClient(limited) as client:
        response = client.post("/api/labels/import?format=jsonl", content=body)
    assert response.status_code == 200 and response.json()["imported"] == 3
    assert label_count(limited) == 3


def test_a_body_past_the_limit_is_413_naming_it(limited: FastAPI) -> None:
    body = rows(5)
    assert len(body) > LIMIT
    with TestClient(limited) as client:
        response = client.post("/api/labels/import?format=jsonl", content=body)
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert f"limit of {LIMIT:,} bytes" in detail and "MONOSEMANTIC_LABELS_IMPORT_MAX_BYTES" in detail
    assert label_count(limited) == 0


def test_a_streamed_body_without_a_length_is_cut_off_at_the_limit(limited: FastAPI) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(50):
            yield b" " * 100

    with TestClient(limited) as client:
        response = client.post(
            "/api/labels/import?format=jsonl", content=chunks(), headers={"Content-Type": "application/x-ndjson"}
        )
    assert response.status_code == 413 and str(LIMIT) in response.json()["detail"]
    assert label_count(limited) == 0


def test_the_default_limit_is_20_mib() -> None:
    assert Settings().labels_import_max_bytes == 20 * 2**20
