"""Bad input at the edges: integers past what SQL stores, oversized texts and forms, malformed imports: 4xx."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.db.models import Dictionary, Label
from app.services.schemas import MAX_SQL_INT, ActivationsOut
from app.settings import Settings
from app.web.factory import create_app
from app.web.pages import MAX_FORM_BYTES
from tests.app.builders import BuiltDatabase, build_database

HUGE = 10**20  # past SQLite's 64-bit integers: the driver raises OverflowError if it gets this far


class RecordingInspector:
    """Records what reaches the inspector, so a refused request can be shown never to have run the models."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def inspect(self, dictionary: Dictionary, text: str, feature: int | None = None) -> ActivationsOut:
        self.calls.append(text)
        return ActivationsOut(dictionary_id=dictionary.id, feature=feature, tokens=[])


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    app = create_app(Settings(workdir=tmp_path, database_url=f"sqlite:///{tmp_path / 'bad.db'}"))
    app.state.inspector = RecordingInspector()
    return app


@pytest.fixture
def built(app: FastAPI) -> BuiltDatabase:
    with app.state.sessionmaker() as session:
        return build_database(session)


@pytest.fixture
def client(app: FastAPI, built: BuiltDatabase) -> TestClient:
    return TestClient(app, raise_server_exceptions=False)


def label_count(app: FastAPI) -> int:
    with app.state.sessionmaker() as session:
        return session.scalar(select(func.count()).select_from(Label))


@pytest.mark.parametrize(
    ("method", "path", "body", "loc"),
    [
        ("get", f"/api/dictionaries/{HUGE}/features", None, ["path", "dictionary_id"]),
        ("get", f"/api/dictionaries/{HUGE}/estimate", None, ["path", "dictionary_id"]),
        ("get", f"/api/dictionaries/{HUGE}/agreement", None, ["path", "dictionary_id"]),
        ("get", f"/api/dictionaries/{HUGE}/next-feature?labeller=a", None, ["path", "dictionary_id"]),
        ("get", f"/api/dictionaries/1/features/{HUGE}", None, ["path", "index"]),
        ("get", f"/api/dictionaries/1/features?offset={HUGE}", None, ["query", "offset"]),
        ("get", f"/api/dictionaries/1/features?offset={MAX_SQL_INT + 1}", None, ["query", "offset"]),
        ("get", "/api/dictionaries/1/features?limit=100000", None, ["query", "limit"]),
        ("post", f"/api/dictionaries/1/features/{HUGE}/labels", {"labeller": "a", "verdict": "monosemantic"}, None),
        ("post", "/api/activations", {"dictionary_id": HUGE, "text": "a"}, ["body", "dictionary_id"]),
        ("post", "/api/activations", {"dictionary_id": 1, "text": "a", "feature": HUGE}, ["body", "feature"]),
    ],
)
def test_api_integers_past_sql_range_are_422_naming_the_field(
    app: FastAPI, client: TestClient, method: str, path: str, body: dict | None, loc: list[str] | None
) -> None:
    response = client.request(method, path, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == (loc or ["path", "index"])
    assert label_count(app) == 0


def test_the_largest_sql_integer_is_a_plain_404(client: TestClient) -> None:
    for path in (f"/api/dictionaries/{MAX_SQL_INT}/features", f"/api/dictionaries/1/features/{MAX_SQL_INT}"):
        response = client.get(path)
        assert response.status_code == 404 and "detail" in response.json(), path
    page = client.get("/api/dictionaries/1/features", params={"offset": MAX_SQL_INT})
    assert page.status_code == 200 and page.json()["features"] == [] and page.json()["total"] == 16


@pytest.mark.parametrize(
    "path",
    [
        f"/dictionaries/{HUGE}",
        f"/dictionaries/{-HUGE}",
        f"/dictionaries/1/features/{HUGE}",
        f"/dictionaries/1/features/{MAX_SQL_INT + 1}",
        f"/dictionaries/1?offset={HUGE}",
        f"/dictionaries/{HUGE}/label",
        f"/dictionaries/1/label?skip={HUGE}",
        f"/estimates?dictionary={HUGE}",
        f"/inspect?dictionary={HUGE}",
    ],
)
def test_pages_with_integers_past_sql_range_are_4xx(client: TestClient, path: str) -> None:
    assert 400 <= client.get(path).status_code < 500


def test_the_largest_sql_integer_on_a_page_is_an_html_404(client: TestClient) -> None:
    for path in (f"/dictionaries/{MAX_SQL_INT}", f"/dictionaries/1/features/{MAX_SQL_INT}"):
        response = client.get(path)
        assert response.status_code == 404 and response.headers["content-type"].startswith("text/html"), path


@pytest.mark.parametrize(
    ("path", "form"),
    [
        (f"/dictionaries/{HUGE}/label", {"feature_index": "1", "verdict": "monosemantic"}),
        ("/dictionaries/1/label", {"feature_index": str(HUGE), "verdict": "monosemantic"}),
        ("/dictionaries/1/label", {"feature_index": str(MAX_SQL_INT + 1), "verdict": "monosemantic"}),
        (f"/dictionaries/{HUGE}/label/undo", {}),
        (f"/dictionaries/{HUGE}/label/labeller", {"labeller": "ann"}),
        ("/inspect", {"dictionary_id": str(HUGE), "text": "a"}),
        ("/inspect", {"dictionary_id": "1", "text": "a", "feature": "²"}),
    ],
)
def test_page_posts_with_integers_past_sql_range_are_4xx(
    app: FastAPI, client: TestClient, path: str, form: dict[str, str]
) -> None:
    client.get("/inspect")  # sets the CSRF cookie
    client.cookies.set("monosemantic_labeller", "ann")
    response = client.post(path, data={"csrf_token": client.cookies.get("monosemantic_csrf"), **form})
    assert 400 <= response.status_code < 500, response.text
    assert label_count(app) == 0
    assert app.state.inspector.calls == []


def test_importing_an_index_past_sql_range_is_400_and_writes_nothing(app: FastAPI, client: TestClient) -> None:
    row = {"dictionary": "a" * 64, "index": HUGE, "labeller": "ann", "verdict": "monosemantic"}
    response = client.post("/api/labels/import?format=jsonl", content=json.dumps(row) + "\n")
    assert response.status_code == 400 and "index" in response.json()["detail"]
    assert label_count(app) == 0


def test_inspector_text_over_the_limit_is_422_and_never_reaches_the_models(app: FastAPI, client: TestClient) -> None:
    limit = app.state.settings.inspector_max_chars
    at_limit = client.post("/api/activations", json={"dictionary_id": 1, "text": "a" * limit})
    assert at_limit.status_code == 200
    over = client.post("/api/activations", json={"dictionary_id": 1, "text": "a" * (limit + 1)})
    assert over.status_code == 422
    assert over.json()["detail"][0]["loc"] == ["body", "text"] and str(limit) in over.json()["detail"][0]["msg"]
    assert app.state.inspector.calls == ["a" * limit]


def test_page_forms_past_the_size_limit_are_413(app: FastAPI, client: TestClient, built: BuiltDatabase) -> None:
    client.get("/inspect")  # sets the CSRF cookie
    token = client.cookies.get("monosemantic_csrf")
    response = client.post(
        f"/dictionaries/{built.small_id}/label",
        data={
            "csrf_token": token,
            "feature_index": "1",
            "verdict": "monosemantic",
            "description": "d" * MAX_FORM_BYTES,
        },
    )
    assert response.status_code == 413 and "detail" in response.json()
    assert label_count(app) == 0


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"\xff\xfe not utf-8", "application/x-ndjson"),
        (
            b'{"dictionary": "aa", "index": 1, "labeller": "ann", "verdict": "monosemantic"}\n{"broken',
            "application/x-ndjson",
        ),
        (b"dictionary,index\naa,1\n", "text/csv"),
        (b"[1, 2, 3]\n", "application/x-ndjson"),
    ],
    ids=["not utf-8", "second line broken", "csv without columns", "not an object"],
)
def test_malformed_imports_are_400_and_write_nothing(
    app: FastAPI, client: TestClient, content: bytes, content_type: str
) -> None:
    response = client.post("/api/labels/import", content=content, headers={"Content-Type": content_type})
    assert response.status_code == 400, response.text
    assert isinstance(response.json()["detail"], str)
    assert label_count(app) == 0
