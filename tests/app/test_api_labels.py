"""Labelling through /api: storing labels, next-feature sampling, the estimate, agreement, export/import."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Label
from tests.app.builders import SMALL_SIZE, BuiltDatabase, add_labels
from tests.app.test_estimates import wilson_by_quadratic


def label_url(built: BuiltDatabase, index: int) -> str:
    return f"/api/dictionaries/{built.small_id}/features/{index}/labels"


def test_posting_a_label_stores_it_against_the_content_hash(
    client: TestClient, built: BuiltDatabase, session: Session
) -> None:
    body = {"labeller": "  ann  ", "verdict": "monosemantic", "description": "the word cat", "confidence": 0.75}
    response = client.post(label_url(built, 4), json=body)
    assert response.status_code == 201
    stored = response.json()
    assert stored["labeller"] == "ann" and stored["dictionary_hash"] == built.small_hash
    assert (stored["feature_index"], stored["verdict"], stored["confidence"]) == (4, "monosemantic", 0.75)
    row = session.scalars(select(Label)).one()
    assert (row.id, row.dictionary_hash, row.feature_index, row.labeller) == (stored["id"], built.small_hash, 4, "ann")
    assert row.description == "the word cat"
    detail = client.get(f"/api/dictionaries/{built.small_id}/features/4").json()
    assert [label["id"] for label in detail["labels"]] == [stored["id"]]


def test_a_label_needs_only_labeller_and_verdict(client: TestClient, built: BuiltDatabase) -> None:
    response = client.post(label_url(built, 0), json={"labeller": "bob", "verdict": "uninterpretable"})
    assert response.status_code == 201
    assert response.json()["description"] == "" and response.json()["confidence"] is None
    assert response.json()["seconds_on_screen"] is None  # not measured: the API has no card on screen


def test_a_label_may_say_how_long_its_card_was_on_screen_and_exports_carry_it(
    client: TestClient, built: BuiltDatabase
) -> None:
    body = {"labeller": "ann", "verdict": "polysemantic", "seconds_on_screen": 3.5}
    response = client.post(label_url(built, 1), json=body)
    assert response.status_code == 201 and response.json()["seconds_on_screen"] == 3.5
    bad = client.post(label_url(built, 2), json=body | {"seconds_on_screen": -1})
    assert bad.status_code == 422 and "seconds_on_screen" in json.dumps(bad.json())
    (row,) = [json.loads(line) for line in client.get("/api/labels/export").text.splitlines()]
    assert row["seconds_on_screen"] == 3.5
    (csv_row,) = csv.DictReader(io.StringIO(client.get("/api/labels/export", params={"format": "csv"}).text))
    assert csv_row["seconds_on_screen"] == "3.5"


def test_each_labeller_gets_the_median_seconds_a_card_was_on_screen(client: TestClient, built: BuiltDatabase) -> None:
    for index, seconds in ((1, 2.0), (2, 9.5), (3, 4.0)):
        body = {"labeller": "ann", "verdict": "polysemantic", "seconds_on_screen": seconds}
        assert client.post(label_url(built, index), json=body).status_code == 201
    assert client.post(label_url(built, 4), json={"labeller": "ann", "verdict": "monosemantic"}).status_code == 201
    assert client.post(label_url(built, 1), json={"labeller": "bob", "verdict": "monosemantic"}).status_code == 201
    per = {row["labeller"]: row for row in client.get("/api/agreement").json()["per_labeller"]}
    # The untimed label (given through the API without a time) counts in neither the median nor timed_labels.
    assert (per["ann"]["median_seconds_per_label"], per["ann"]["timed_labels"]) == (4.0, 3)
    assert (per["bob"]["median_seconds_per_label"], per["bob"]["timed_labels"]) == (None, 0)
    page = client.get("/estimates").text
    labellers = page[page.index('<table class="labellers">') :]
    ann_row = labellers[labellers.index('<tr data-labeller="ann">') :].split("</tr>")[0]
    assert '<td class="num" data-seconds-per-label>4.0</td>' in ann_row


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"verdict": "monosemantic"}, "labeller"),
        ({"labeller": "   ", "verdict": "monosemantic"}, "labeller"),
        ({"labeller": "x" * 65, "verdict": "monosemantic"}, "labeller"),
        ({"labeller": "ann", "verdict": "maybe"}, "verdict"),
        ({"labeller": "ann", "verdict": "monosemantic", "description": "d" * 2001}, "description"),
        ({"labeller": "ann", "verdict": "monosemantic", "confidence": 1.5}, "confidence"),
        ({"labeller": "ann", "verdict": "monosemantic", "confidence": -0.1}, "confidence"),
        ({"labeller": "ann", "verdict": "monosemantic", "confidence": "high"}, "confidence"),
        ({"labeller": "ann", "verdict": "monosemantic", "colour": "red"}, "colour"),
    ],
)
def test_invalid_labels_are_422_naming_the_field_and_not_stored(
    client: TestClient, built: BuiltDatabase, session: Session, body: dict, field: str
) -> None:
    response = client.post(label_url(built, 1), json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", field]
    assert session.scalars(select(Label)).all() == []


def test_labels_of_unknown_features_or_dictionaries_are_404(client: TestClient, built: BuiltDatabase) -> None:
    body = {"labeller": "ann", "verdict": "monosemantic"}
    assert client.post(label_url(built, SMALL_SIZE), json=body).status_code == 404
    assert client.post("/api/dictionaries/99/features/0/labels", json=body).status_code == 404


def test_next_feature_never_gives_a_labelled_or_dead_feature_and_covers_the_rest(
    client: TestClient, built: BuiltDatabase, session: Session
) -> None:
    labelled = [0, 5, 9]
    add_labels(session, built.small_hash, [(i, "ann", "monosemantic") for i in labelled] + [(1, "bob", "polysemantic")])
    url = f"/api/dictionaries/{built.small_id}/next-feature"
    draws = Counter(client.get(url, params={"labeller": "ann"}).json()["index"] for _ in range(220))
    expected = set(built.small_alive) - set(labelled)
    assert set(draws) == expected  # feature 1 was labelled by bob only, so it stays in ann's pool
    # Uniform over 11 features: each of 220 draws lands on a feature with probability 1/11 (expected 20).
    assert min(draws.values()) >= 5 and max(draws.values()) <= 40


def test_next_feature_has_the_feature_detail_shape(client: TestClient, built: BuiltDatabase) -> None:
    body = client.get(f"/api/dictionaries/{built.small_id}/next-feature", params={"labeller": "cy"}).json()
    assert {"index", "density", "top_contexts", "quantile_samples", "histogram", "labels"} <= set(body)
    assert body["alive"] is True


def test_next_feature_is_404_when_the_labeller_has_labelled_everything(
    client: TestClient, built: BuiltDatabase, session: Session
) -> None:
    add_labels(session, built.small_hash, [(i, "ann", "polysemantic") for i in built.small_alive])
    response = client.get(f"/api/dictionaries/{built.small_id}/next-feature", params={"labeller": "ann"})
    assert response.status_code == 404
    assert "ann" in response.json()["detail"] and "every alive feature" in response.json()["detail"]


@pytest.mark.parametrize("params", [{}, {"labeller": "  "}, {"labeller": "x" * 65}])
def test_next_feature_needs_a_labeller(client: TestClient, built: BuiltDatabase, params: dict) -> None:
    response = client.get(f"/api/dictionaries/{built.small_id}/next-feature", params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "labeller"]


def test_estimate_counts_latest_labels_per_labeller_and_majority_per_feature(
    client: TestClient, built: BuiltDatabase, session: Session
) -> None:
    m, p, u = "monosemantic", "polysemantic", "uninterpretable"
    add_labels(
        session,
        built.small_hash,
        [
            (0, "ann", p),
            (0, "ann", m),  # relabelled: ann's latest on 0 is m -> 0 is monosemantic
            (1, "ann", m),
            (1, "bob", p),  # tie -> not monosemantic
            (2, "ann", m),
            (2, "bob", m),
            (2, "cy", p),  # majority -> monosemantic
            (4, "bob", u),
            (3, "ann", m),  # dead feature: ignored
        ],
    )
    body = client.get(f"/api/dictionaries/{built.small_id}/estimate").json()
    alive = len(built.small_alive)
    assert (body["alive"], body["labelled"], body["monosemantic"]) == (alive, 4, 2)
    low, high = wilson_by_quadratic(2, 4)
    assert body["fraction"] == pytest.approx(0.5)
    assert (body["fraction_low"], body["fraction_high"]) == pytest.approx((low, high))
    assert body["estimate"] == pytest.approx(alive / 2)
    assert (body["estimate_low"], body["estimate_high"]) == pytest.approx((alive * low, alive * high))
    assert body["quartiles"] is None
    agreement = body["agreement"]
    # Features 1 and 2 have several labellers, three names in all: Fleiss' kappa.
    assert (agreement["method"], agreement["features"], agreement["labellers"]) == ("fleiss", 2, 3)
    per = {row["labeller"]: row for row in agreement["per_labeller"]}
    assert (per["ann"]["labelled"], per["ann"]["monosemantic"]) == (3, 3)
    assert (per["bob"]["polysemantic"], per["bob"]["uninterpretable"]) == (1, 1)


def test_estimate_of_30_labels_18_monosemantic(client: TestClient, built: BuiltDatabase, session: Session) -> None:
    verdicts = ["monosemantic"] * 18 + ["polysemantic"] * 12
    add_labels(session, built.large_hash, [(i, "ann", v) for i, v in enumerate(verdicts)])
    body = client.get(f"/api/dictionaries/{built.large_id}/estimate").json()
    assert (body["alive"], body["labelled"], body["monosemantic"]) == (32, 30, 18)
    assert (body["fraction_low"], body["fraction_high"]) == pytest.approx((0.4232, 0.7541), abs=5e-5)
    assert body["estimate"] == pytest.approx(32 * 0.6)


def test_estimate_by_density_gives_quartiles(client: TestClient, built: BuiltDatabase, session: Session) -> None:
    # Alive features sorted by density are the alive indices in order: quartiles of 3, 4, 3, 4 features.
    m, p = "monosemantic", "polysemantic"
    add_labels(session, built.small_hash, [(0, "ann", m), (1, "ann", p), (15, "ann", m)])
    body = client.get(f"/api/dictionaries/{built.small_id}/estimate", params={"by": "density"}).json()
    quartiles = body["quartiles"]
    assert [q["quartile"] for q in quartiles] == [1, 2, 3, 4]
    assert [q["alive"] for q in quartiles] == [3, 4, 3, 4]
    assert sum(q["alive"] for q in quartiles) == body["alive"]
    first, last = quartiles[0], quartiles[3]
    assert (first["density_low"], first["density_high"]) == pytest.approx((0.001, 0.003))
    assert (first["labelled"], first["monosemantic"], first["fraction"]) == (2, 1, 0.5)
    assert (last["labelled"], last["monosemantic"], last["fraction"]) == (1, 1, 1.0)
    assert last["fraction_high"] == 1.0
    assert quartiles[1]["labelled"] == 0 and quartiles[1]["fraction"] is None
    assert client.get(f"/api/dictionaries/{built.small_id}/estimate", params={"by": "size"}).status_code == 422


def test_agreement_routes_give_cohen_kappa_for_two_labellers(
    client: TestClient, built: BuiltDatabase, session: Session
) -> None:
    m, p = "monosemantic", "polysemantic"
    add_labels(session, built.small_hash, [(0, "ann", m), (0, "bob", m), (1, "ann", p), (1, "bob", m), (2, "ann", m)])
    body = client.get(f"/api/dictionaries/{built.small_id}/agreement").json()
    # Pairs (m, m), (p, m): observed 1/2; ann m/p half each, bob all m: chance 1/2 -> kappa 0.
    assert (body["method"], body["features"], body["observed"], body["expected"]) == ("cohen", 2, 0.5, 0.5)
    assert body["kappa"] == pytest.approx(0.0)
    pooled = client.get("/api/agreement").json()
    assert pooled["method"] == "cohen" and pooled["features"] == 2
    assert {row["labeller"]: row["labelled"] for row in pooled["per_labeller"]} == {"ann": 3, "bob": 2}


def test_labels_export_then_import_round_trips(client: TestClient, built: BuiltDatabase, session: Session) -> None:
    client.post(label_url(built, 2), json={"labeller": "ann", "verdict": "monosemantic", "description": 'a "cat", b'})
    client.post(label_url(built, 3), json={"labeller": "bob", "verdict": "polysemantic", "confidence": 0.5})
    for fmt, media in (("csv", "text/csv"), ("jsonl", "application/x-ndjson")):
        exported = client.get("/api/labels/export", params={"format": fmt})
        assert exported.status_code == 200
        assert exported.headers["content-type"].startswith(media)
        again = client.post("/api/labels/import", params={"format": fmt}, content=exported.content)
        assert again.status_code == 200
        assert again.json() == {"imported": 0, "skipped": 2}
    rows = [json.loads(line) for line in client.get("/api/labels/export").text.splitlines()]
    assert [(r["dictionary"], r["index"], r["labeller"], r["verdict"]) for r in rows] == [
        (built.small_hash, 2, "ann", "monosemantic"),
        (built.small_hash, 3, "bob", "polysemantic"),
    ]
    assert rows[1]["confidence"] == 0.5 and rows[0]["description"] == 'a "cat", b'
    new = dict(rows[0], labeller="cy", created_at="2026-02-01T00:00:00+00:00")
    response = client.post(
        "/api/labels/import", content=json.dumps(new) + "\n", headers={"Content-Type": "application/x-ndjson"}
    )
    assert response.json() == {"imported": 1, "skipped": 0}
    assert session.scalars(select(Label).where(Label.labeller == "cy")).one().feature_index == 2


def test_a_malformed_import_is_400_and_writes_nothing(
    client: TestClient, built: BuiltDatabase, session: Session
) -> None:
    good = {"dictionary": built.small_hash, "index": 1, "labeller": "ann", "verdict": "monosemantic"}
    bad = dict(good, verdict="maybe")
    text = json.dumps(good) + "\n" + json.dumps(bad) + "\n"
    response = client.post("/api/labels/import", params={"format": "jsonl"}, content=text)
    assert response.status_code == 400
    assert "line 2" in response.json()["detail"] and "verdict" in response.json()["detail"]
    assert session.scalars(select(Label)).all() == []
    unknown = client.post("/api/labels/import", content=text, headers={"Content-Type": "text/plain"})
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["query", "format"]
    assert client.get("/api/labels/export", params={"format": "xml"}).status_code == 422
