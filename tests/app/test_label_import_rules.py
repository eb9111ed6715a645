"""POST /api/labels/import holds every row to the rules of the label API, and the CSV export is spreadsheet-safe."""

from __future__ import annotations

import csv
import io
import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Label
from tests.app.builders import LARGE_SIZE, BuiltDatabase


def good_row(built: BuiltDatabase, **changes: object) -> dict:
    row = {"dictionary": built.large_hash, "index": 3, "labeller": "ann", "verdict": "polysemantic"}
    return row | {"created_at": "2026-01-01T00:00:00+00:00"} | changes


BAD_ROWS = {
    "index past the dictionary": ({"index": 2**31 - 1}, "index"),
    "index just past the dictionary": ({"index": LARGE_SIZE}, "index"),
    "labeller of only spaces": ({"labeller": "   "}, "labeller"),
    "labeller with a control character": ({"labeller": "ann\x1b"}, "labeller"),
    "labeller with a right-to-left override": ({"labeller": "\u202eann"}, "labeller"),
    "too little evidence, yet monosemantic top contexts": (
        {"verdict": "too_little_evidence", "top_contexts_monosemantic": True},
        "top_contexts_monosemantic",
    ),
    "monosemantic with polysemantic top contexts": (
        {"verdict": "monosemantic", "top_contexts_monosemantic": False},
        "top_contexts_monosemantic",
    ),
    "unknown dictionary": ({"dictionary": "d" * 64}, "dictionary"),
    "created in the future": ({"created_at": "9999-12-31T00:00:00+00:00"}, "created_at"),
}


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_an_import_with_a_row_the_api_would_refuse_stores_nothing_and_names_the_line(
    client: TestClient, built: BuiltDatabase, session: Session, case: str, fmt: str
) -> None:
    changes, field = BAD_ROWS[case]
    rows = [good_row(built), good_row(built, index=4), good_row(built, **changes)]
    response = client.post("/api/labels/import", params={"format": fmt}, content=as_text(rows, fmt))
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    line = 3 if fmt == "jsonl" else 4  # the CSV header is line 1
    assert f"line {line}: {field}" in detail and "nothing was imported" in detail
    assert session.scalars(select(Label)).all() == []


def test_every_bad_line_is_named_at_once(client: TestClient, built: BuiltDatabase, session: Session) -> None:
    rows = [good_row(built, **changes) for changes, _ in BAD_ROWS.values()]
    response = client.post("/api/labels/import", params={"format": "jsonl"}, content=as_text(rows, "jsonl"))
    assert response.status_code == 400
    detail = response.json()["detail"]
    # Field rules are checked first; rows that pass them are then checked against the indexed dictionaries.
    named = [n for n in range(1, len(rows) + 1) if f"line {n}:" in detail]
    assert named == [3, 4, 5, 6, 7, 9]
    rows = [good_row(built, index=2**31 - 1), good_row(built, index=LARGE_SIZE), good_row(built, dictionary="d" * 64)]
    detail = client.post("/api/labels/import", params={"format": "jsonl"}, content=as_text(rows, "jsonl")).json()
    assert all(f"line {n}:" in detail["detail"] for n in (1, 2, 3))
    assert session.scalars(select(Label)).all() == []


def test_a_valid_import_still_stores_every_row(client: TestClient, built: BuiltDatabase, session: Session) -> None:
    rows = [good_row(built), good_row(built, index=LARGE_SIZE - 1, labeller="  bob  ", top_contexts_monosemantic=True)]
    response = client.post("/api/labels/import", params={"format": "csv"}, content=as_text(rows, "csv"))
    assert response.json() == {"imported": 2, "skipped": 0}
    assert sorted(label.labeller for label in session.scalars(select(Label))) == ["ann", "bob"]


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r", "'"])
def test_the_csv_export_quotes_text_a_spreadsheet_would_run_and_imports_it_back(
    client: TestClient, built: BuiltDatabase, session: Session, start: str
) -> None:
    name = '=HYPERLINK("http://example.invalid","x")' if start in "=\t\r" else start + "ann"
    description = start + "1+2"
    url = f"/api/dictionaries/{built.small_id}/features/4/labels"
    body = {"labeller": name, "verdict": "polysemantic", "description": description}
    assert client.post(url, json=body).status_code == 201
    exported = client.get("/api/labels/export", params={"format": "csv"}).text
    (row,) = list(csv.DictReader(io.StringIO(exported, newline="")))
    assert row["labeller"] == "'" + name and row["description"] == "'" + description
    session.execute(Label.__table__.delete())
    session.commit()
    assert client.post("/api/labels/import", params={"format": "csv"}, content=exported).json()["imported"] == 1
    label = session.scalars(select(Label)).one()
    assert (label.labeller, label.description) == (name, description)


def test_a_leading_quote_not_added_by_the_export_is_kept(client: TestClient, built: BuiltDatabase) -> None:
    url = f"/api/dictionaries/{built.small_id}/features/4/labels"
    client.post(url, json={"labeller": "ann", "verdict": "polysemantic", "description": "'tis a cat"})
    exported = client.get("/api/labels/export", params={"format": "csv"}).text
    assert list(csv.DictReader(io.StringIO(exported)))[0]["description"] == "''tis a cat"
    jsonl = client.get("/api/labels/export", params={"format": "jsonl"}).text
    assert json.loads(jsonl)["description"] == "'tis a cat"


def as_text(rows: list[dict], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(row) + "\n" for row in rows)
    columns = ["dictionary", "index", "labeller", "verdict", "description", "confidence", "created_at"]
    columns.append("top_contexts_monosemantic")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        top = row.get("top_contexts_monosemantic")
        writer.writerow(row | {"top_contexts_monosemantic": "" if top is None else str(top).lower()})
    return out.getvalue()
