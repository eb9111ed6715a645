"""Requests the API must refuse cleanly: values JSON does not allow, oversized bodies, lax types, odd paths.

Each answer is a 4xx whose body is JSON naming the field, never a 500, and what it echoes is short.
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Label
from app.web.api_errors import MAX_ECHO_CHARS, safe_echo
from tests.app.builders import BuiltDatabase


def label_url(built: BuiltDatabase, index: int | str = 4) -> str:
    return f"/api/dictionaries/{built.small_id}/features/{index}/labels"


def post_raw(client: TestClient, url: str, text: str):
    return client.post(url, content=text.encode("utf-8", "surrogatepass"), headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("labels", '{"labeller":"v","verdict":"monosemantic","confidence":NaN}', "confidence"),
        ("labels", '{"labeller":"v","verdict":"monosemantic","confidence":Infinity}', "confidence"),
        ("labels", '{"labeller":"v","verdict":"monosemantic","confidence":-Infinity}', "confidence"),
        ("labels", '{"labeller":"v","verdict":"monosemantic","description":"\\ud800"}', "description"),
        ("labels", '{"labeller":"\\udfff","verdict":"monosemantic"}', "labeller"),
        ("activations", '{"dictionary_id":NaN,"text":"the cat"}', "dictionary_id"),
        ("activations", '{"dictionary_id":1,"text":"\\ud800"}', "text"),
        ("contrast", '{"a":"[[x]]","b":"[[y]]","max_positions":Infinity}', "max_positions"),
        ("contrast", '{"a":"[[x]]","b_examples":["[[\\ud800]]"]}', "b_examples"),
    ],
)
def test_nan_infinity_and_lone_surrogates_are_422_naming_the_field(
    client: TestClient, built: BuiltDatabase, session: Session, path: str, body: str, field: str
) -> None:
    url = {"labels": label_url(built), "activations": "/api/activations", "contrast": "/api/contrast"}[path]
    response = post_raw(client, url, body)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert field in error["loc"]
    assert session.scalars(select(Label)).all() == []


def test_a_validation_error_echoes_a_long_value_cut_short(client: TestClient, built: BuiltDatabase) -> None:
    body = {"labeller": "ann", "verdict": "monosemantic", "description": "d" * 100_000}
    response = client.post(label_url(built), json=body)
    assert response.status_code == 422
    assert len(response.content) < 2 * MAX_ECHO_CHARS + 500
    assert response.json()["detail"][0]["loc"] == ["body", "description"]


def test_a_body_of_a_mebibyte_is_413_and_not_stored(client: TestClient, built: BuiltDatabase, session: Session) -> None:
    padded = '{"labeller": "ann", "verdict": "monosemantic"' + " " * 2**20 + "}"
    response = post_raw(client, label_url(built), padded)
    assert response.status_code == 413
    assert "MONOSEMANTIC_JSON_BODY_MAX_BYTES" in response.json()["detail"]
    big = {"a": "[[x]]", "b_examples": ["[[y]]" + "z" * 400] * 50, "seed": 1}
    assert client.post("/api/contrast", content=json.dumps(big) + " " * 2**20).status_code == 413
    assert session.scalars(select(Label)).all() == []


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"confidence": False}, "confidence"),
        ({"confidence": True}, "confidence"),
        ({"confidence": "0.5"}, "confidence"),
        ({"top_contexts_monosemantic": "yes"}, "top_contexts_monosemantic"),
        ({"top_contexts_monosemantic": 1}, "top_contexts_monosemantic"),
    ],
)
def test_lax_label_values_are_422_not_converted(
    client: TestClient, built: BuiltDatabase, session: Session, extra: dict, field: str
) -> None:
    response = client.post(label_url(built), json={"labeller": "ann", "verdict": "polysemantic", **extra})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", field]
    assert session.scalars(select(Label)).all() == []


def test_an_integer_confidence_is_still_a_number(client: TestClient, built: BuiltDatabase) -> None:
    response = client.post(label_url(built), json={"labeller": "ann", "verdict": "polysemantic", "confidence": 1})
    assert response.status_code == 201 and response.json()["confidence"] == 1.0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"dictionary_id": "1"}, "dictionary_id"),
        ({"dictionary_id": 1.5}, "dictionary_id"),
        ({"dictionary_id": True}, "dictionary_id"),
        ({"feature": True}, "feature"),
    ],
)
def test_lax_numbers_in_other_bodies_are_422(client: TestClient, built: BuiltDatabase, body: dict, field: str) -> None:
    response = client.post("/api/activations", json={"dictionary_id": built.small_id, "text": "the cat", **body})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", field]


@pytest.mark.parametrize("index", ["%201", "1.0", "+1", "01", "1%20", "%D9%A1"])
def test_feature_paths_take_only_plain_digits(client: TestClient, built: BuiltDatabase, index: str) -> None:
    assert client.get(f"/api/dictionaries/{built.small_id}/features/{index}").status_code == 422
    response = client.post(label_url(built, index), json={"labeller": "ann", "verdict": "polysemantic"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["path", "index"]
    assert client.get(f"/api/dictionaries/{built.small_id}/features", params={"limit": "1.0"}).status_code == 422
    assert client.get(f"/api/dictionaries/{built.small_id}/features/1").status_code == 200


@pytest.mark.parametrize("name", ["ann\x00", "\x1b[31mann", "ann\u202eoxe", "zero\u200bwidth", "a\nb"])
def test_labeller_names_with_control_or_formatting_characters_are_refused(
    client: TestClient, built: BuiltDatabase, session: Session, name: str
) -> None:
    response = client.post(label_url(built), json={"labeller": name, "verdict": "polysemantic"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "labeller"]
    assert "U+" in response.json()["detail"][0]["msg"]
    assert session.scalars(select(Label)).all() == []


def test_a_nul_in_a_description_is_refused(client: TestClient, built: BuiltDatabase) -> None:
    body = {"labeller": "ann", "verdict": "polysemantic", "description": "cat\x00"}
    response = client.post(label_url(built), json=body)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "description"]


def test_a_huge_integer_is_422_not_a_bare_400(client: TestClient, built: BuiltDatabase) -> None:
    response = post_raw(client, "/api/activations", '{"dictionary_id": ' + "9" * 5000 + ', "text": "x"}')
    assert response.status_code == 422


def test_a_body_that_is_not_utf8_is_answered_with_json(client: TestClient, built: BuiltDatabase) -> None:
    response = client.post(label_url(built), content=b"\xff\xfe{", headers={"Content-Type": "text/plain"})
    assert response.status_code == 422
    assert response.json()["detail"]


def test_any_echoed_value_serializes_as_short_json() -> None:
    value = {"nan": float("nan"), "inf": [float("inf"), float("-inf")], "text": "\ud800" + "x" * 1000, "raw": b"\xff"}
    echoed = safe_echo(value)
    text = json.dumps(echoed, allow_nan=False).encode("utf-8")
    assert echoed["nan"] == "NaN" and echoed["inf"] == ["Infinity", "-Infinity"]
    assert echoed["text"].startswith("\\ud800x") and len(echoed["text"]) < MAX_ECHO_CHARS + 40
    assert echoed["raw"] == "\ufffd" and len(text) < 600
    assert len(safe_echo(list(range(1000)))) == 21


def test_the_openapi_document_declares_the_error_statuses(client: TestClient, built: BuiltDatabase) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    declared = {
        (path, method): set(operation["responses"])
        for path, methods in paths.items()
        for method, operation in methods.items()
    }
    assert {"400", "401", "404", "413", "422"} <= declared[
        "/api/dictionaries/{dictionary_id}/features/{index}/labels", "post"
    ]
    assert {"400", "401", "413", "422"} <= declared["/api/labels/import", "post"]
    assert {"401", "409", "413", "422", "503"} <= declared["/api/contrast", "post"]
    assert {"404", "409", "413", "422"} <= declared["/api/activations", "post"]
    assert {"404", "500"} <= declared["/api/feature-count", "get"]
    for path in ("/features", "/features/{index}", "/next-feature", "/estimate", "/agreement"):
        assert "404" in declared[f"/api/dictionaries/{{dictionary_id}}{path}", "get"]
    missing = client.get("/api/dictionaries/999/features/1")
    assert missing.status_code == 404 and set(missing.json()) == {"detail"}
