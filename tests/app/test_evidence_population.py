"""The labelling population is the alive (enough-evidence) features: the queue, the estimate and its words.

The fixture is a run with known fire counts (``tests.db.builders.build_run`` with rare features) ingested
as ``monosemantic index`` would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.services.ingest import ingest_run
from tests.app.conftest import make_app
from tests.db.builders import build_run, is_dead, is_rare_every_eighth

SIZE = 16
DEAD = [i for i in range(SIZE) if is_dead(i)]
RARE = [i for i in range(SIZE) if is_rare_every_eighth(i) and not is_dead(i)]
ALIVE = [i for i in range(SIZE) if i not in DEAD and i not in RARE]


@pytest.fixture
def evidence_app(tmp_path: Path) -> tuple[FastAPI, int]:
    app = make_app(tmp_path)
    run = build_run(tmp_path / "run", sizes=(SIZE,), rare=is_rare_every_eighth)
    (summary,) = ingest_run(app.state.engine, run.run_dir)
    return app, summary.dictionary_id


@pytest.fixture
def client(evidence_app) -> TestClient:
    with TestClient(evidence_app[0]) as test_client:
        yield test_client


def post_label(client: TestClient, dictionary_id: int, index: int, labeller: str, verdict: str, **extra) -> dict:
    response = client.post(
        f"/api/dictionaries/{dictionary_id}/features/{index}/labels",
        json={"labeller": labeller, "verdict": verdict, **extra},
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_dictionaries_report_dead_rare_and_alive_with_their_criteria(client, evidence_app):
    (record,) = client.get("/api/dictionaries").json()
    assert (record["dead"], record["rare"], record["alive"]) == (len(DEAD), len(RARE), len(ALIVE)) == (4, 2, 10)
    assert (record["min_firings"], record["min_contribution"]) == (20, 0.05)


def test_the_queue_never_serves_a_rare_or_dead_feature(client, evidence_app):
    dictionary_id = evidence_app[1]
    served = []
    for _ in range(len(ALIVE)):
        feature = client.get(f"/api/dictionaries/{dictionary_id}/next-feature", params={"labeller": "ada"}).json()
        assert feature["evidence"] == "alive" and feature["fire_count"] >= 20
        served.append(feature["index"])
        post_label(client, dictionary_id, feature["index"], "ada", "polysemantic", top_contexts_monosemantic=False)
    assert sorted(served) == ALIVE
    response = client.get(f"/api/dictionaries/{dictionary_id}/next-feature", params={"labeller": "ada"})
    assert response.status_code == 404


def test_feature_pages_filter_by_evidence(client, evidence_app):
    dictionary_id = evidence_app[1]
    url = f"/api/dictionaries/{dictionary_id}/features"
    for level, members in (("alive", ALIVE), ("rare", RARE), ("dead", DEAD)):
        page = client.get(url, params={"evidence": level, "limit": 50}).json()
        assert page["total"] == len(members)
        assert [f["index"] for f in page["features"]] == members
        assert {f["evidence"] for f in page["features"]} == {level}
    assert client.get(url).json()["total"] == SIZE
    assert client.get(url, params={"evidence": "nonsense"}).status_code == 422


def test_the_estimate_states_its_population_and_keeps_rare_labels_apart(client, evidence_app):
    dictionary_id = evidence_app[1]
    post_label(client, dictionary_id, ALIVE[0], "ada", "monosemantic")
    post_label(client, dictionary_id, ALIVE[1], "ada", "polysemantic", top_contexts_monosemantic=True)
    post_label(client, dictionary_id, ALIVE[2], "ada", "too_little_evidence")
    rare_label = post_label(client, dictionary_id, RARE[0], "ada", "monosemantic")
    estimate = client.get(f"/api/dictionaries/{dictionary_id}/estimate").json()
    assert estimate["population"] == (
        "of 10 features that fired at least 20 times with a largest contribution of at least 5% of the "
        "activations' RMS norm; 2 rarer ones and 4 dead ones not counted"
    )
    assert (estimate["alive"], estimate["rare"], estimate["dead"]) == (10, 2, 4)
    # The rare feature's label and the too-little-evidence verdict count in neither denominator nor numerator.
    assert (estimate["labelled"], estimate["monosemantic"]) == (2, 1)
    assert estimate["labelled_not_alive"] == 1 and estimate["too_little_evidence"] == 1
    assert estimate["estimate"] == pytest.approx(10 * 0.5)
    assert [(c["labeller"], c["too_little_evidence"]) for c in estimate["agreement"]["per_labeller"]] == [("ada", 1)]
    page = client.get("/estimates").text
    assert (
        "of 10 features that fired at least 20 times" in page and "1 labelled rare or dead feature kept apart" in page
    )
    assert 'data-reading="top_contexts"' in page and 'data-reading="activation_range"' in page
    # The label of the rare feature is still stored, shown on its feature and exported.
    detail = client.get(f"/api/dictionaries/{dictionary_id}/features/{RARE[0]}").json()
    assert detail["evidence"] == "rare" and [label["id"] for label in detail["labels"]] == [rare_label["id"]]
    exported = [json.loads(line) for line in client.get("/api/labels/export?format=jsonl").text.splitlines()]
    assert {(row["index"], row["verdict"]) for row in exported} >= {(RARE[0], "monosemantic")}


def test_both_readings_are_stored_estimated_and_agreed_on(client, evidence_app):
    dictionary_id = evidence_app[1]
    # ada and bob agree on the strict reading of 4 features and on the top contexts of 3 of them.
    verdicts = {
        ALIVE[0]: (("monosemantic", None), ("monosemantic", None)),
        ALIVE[1]: (("polysemantic", True), ("polysemantic", True)),
        ALIVE[2]: (("polysemantic", False), ("polysemantic", True)),
        ALIVE[3]: (("uninterpretable", False), ("uninterpretable", False)),
    }
    for index, pairs in verdicts.items():
        for labeller, (verdict, top) in zip(("ada", "bob"), pairs, strict=True):
            extra = {} if top is None else {"top_contexts_monosemantic": top}
            stored = post_label(client, dictionary_id, index, labeller, verdict, **extra)
            assert stored["top_contexts_monosemantic"] == (True if verdict == "monosemantic" else top)
    estimate = client.get(f"/api/dictionaries/{dictionary_id}/estimate").json()
    top, strict = estimate["readings"]
    assert (top["reading"], strict["reading"]) == ("top_contexts", "activation_range")
    assert (strict["labelled"], strict["monosemantic"], strict["estimate"]) == (4, 1, pytest.approx(10 / 4))
    assert (estimate["labelled"], estimate["monosemantic"]) == (4, 1)
    # Top contexts: ALIVE[0] and ALIVE[1] by both; ALIVE[2] is a tie (not a majority), ALIVE[3] no.
    assert (top["labelled"], top["monosemantic"], top["estimate"]) == (4, 2, pytest.approx(10 / 2))
    assert top["fraction_low"] < 0.5 < top["fraction_high"]
    assert strict["agreement"]["kappa"] == pytest.approx(1.0)
    # Top reading pairs: (m, m), (m, m), (p, m), (p, p): observed 3/4, expected (3/4*2/4 + 1/4*2/4)... by Cohen.
    observed, first, second = 3 / 4, {"m": 2 / 4, "p": 2 / 4}, {"m": 3 / 4, "p": 1 / 4}
    expected = sum(first[c] * second[c] for c in first)
    assert top["agreement"]["kappa"] == pytest.approx((observed - expected) / (1 - expected))


@pytest.mark.parametrize(
    "body",
    [
        {"labeller": "ada", "verdict": "monosemantic", "top_contexts_monosemantic": False},
        {"labeller": "ada", "verdict": "too_little_evidence", "top_contexts_monosemantic": True},
        {"labeller": "ada", "verdict": "polysemantic", "top_contexts_monosemantic": "perhaps"},
    ],
)
def test_contradictory_readings_are_422_naming_the_field(client, evidence_app, body):
    response = client.post(f"/api/dictionaries/{evidence_app[1]}/features/{ALIVE[0]}/labels", json=body)
    assert response.status_code == 422
    assert "top_contexts_monosemantic" in json.dumps(response.json()["detail"])


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_both_readings_and_the_fourth_verdict_survive_export_and_import(tmp_path, fmt):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    source, target = make_app(tmp_path / "a"), make_app(tmp_path / "b")
    run = build_run(tmp_path / "run", sizes=(SIZE,), rare=is_rare_every_eighth)
    ids = [ingest_run(app.state.engine, run.run_dir)[0].dictionary_id for app in (source, target)]
    with TestClient(source) as a, TestClient(target) as b:
        post_label(a, ids[0], ALIVE[0], "ada", "polysemantic", top_contexts_monosemantic=True, confidence=0.75)
        post_label(a, ids[0], ALIVE[1], "ada", "uninterpretable", top_contexts_monosemantic=False)
        post_label(a, ids[0], ALIVE[2], "ada", "too_little_evidence")
        post_label(a, ids[0], RARE[0], "ada", "monosemantic")
        text = a.get(f"/api/labels/export?format={fmt}").text
        imported = b.post(f"/api/labels/import?format={fmt}", content=text.encode())
        assert imported.json() == {"imported": 4, "skipped": 0}
        assert b.get(f"/api/labels/export?format={fmt}").text == text
        rows = {
            (r["index"], r["verdict"], r["top_contexts_monosemantic"])
            for r in (json.loads(line) for line in b.get("/api/labels/export?format=jsonl").text.splitlines())
        }
        assert rows == {
            (ALIVE[0], "polysemantic", True),
            (ALIVE[1], "uninterpretable", False),
            (ALIVE[2], "too_little_evidence", None),
            (RARE[0], "monosemantic", True),
        }
        before = b.get(f"/api/dictionaries/{ids[1]}/estimate").json()
        assert [r["monosemantic"] for r in before["readings"]] == [1, 0]
        # An older export without the new column still imports (the reading is then unknown).
        old = (
            "dictionary,index,labeller,verdict,description,confidence,created_at\n"
            f"{run.indexes[0].meta.weights_hash},{ALIVE[3]},cy,polysemantic,,,2024-01-01T00:00:00\n"
        )
        assert b.post("/api/labels/import?format=csv", content=old.encode()).status_code == 200
        after = b.get(f"/api/dictionaries/{ids[1]}/estimate").json()
        assert after["readings"][1]["labelled"] == 3 and after["readings"][0]["labelled"] == 2


def test_new_criteria_in_the_index_meta_reclassify_on_the_next_ingest(client, evidence_app, tmp_path):
    app, dictionary_id = evidence_app
    detail_url = f"/api/dictionaries/{dictionary_id}/features/{RARE[0]}"
    assert client.get(detail_url).json()["evidence"] == "rare"  # and now cached
    folder = next((tmp_path / "run" / "features").glob("relu_*"))
    meta = json.loads((folder / "feature_index.json").read_text())
    meta["config"]["min_firings"] = 1  # RARE[0] fired a few times: enough now
    (folder / "feature_index.json").write_text(json.dumps(meta))
    (summary,) = ingest_run(app.state.engine, tmp_path / "run", force=False)
    assert (summary.alive, summary.rare, summary.dead) == (11, 1, 4)
    assert client.get(detail_url).json()["evidence"] == "alive"
    (record,) = client.get("/api/dictionaries").json()
    assert (record["alive"], record["rare"], record["min_firings"]) == (11, 1, 1)
