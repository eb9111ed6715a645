"""The read routes of /api on the builder's database: bodies, sorting, filtering, validation and 404s."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.app.builders import LARGE_SIZE, SMALL_DEAD, SMALL_SIZE, TOKENS, BuiltDatabase, add_labels, top_token_id


def test_health_counts_dictionaries(client: TestClient) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["dictionaries"] == 2


def test_dictionaries_give_metrics_and_the_sparsity_setting_per_arch(client: TestClient, built: BuiltDatabase) -> None:
    response = client.get("/api/dictionaries")
    assert response.status_code == 200
    by_id = {d["id"]: d for d in response.json()}
    small, large = by_id[built.small_id], by_id[built.large_id]
    assert small["content_hash"] == built.small_hash
    assert (small["arch"], small["dict_size"], small["layer"]) == ("relu", SMALL_SIZE, 2)
    assert (small["sparsity_key"], small["sparsity_value"], small["l1"], small["k"]) == ("l1", 0.1, 0.1, None)
    assert (large["sparsity_key"], large["l1"], large["k"]) == ("k", None, 4)
    assert (small["alive"], small["dead"]) == (SMALL_SIZE - len(SMALL_DEAD), len(SMALL_DEAD))
    assert (small["l0"], small["fvu"], small["ce_recovered"]) == (3.5, 0.12, 0.93)
    assert small["labelled"] == 0


def test_features_default_page_is_by_index(client: TestClient, built: BuiltDatabase) -> None:
    response = client.get(f"/api/dictionaries/{built.small_id}/features")
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == SMALL_SIZE and (body["limit"], body["offset"]) == (50, 0)
    assert [f["index"] for f in body["features"]] == list(range(SMALL_SIZE))
    first = body["features"][1]
    assert first["density"] == pytest.approx(0.002) and first["max_activation"] == pytest.approx(1.5)
    assert first["top_tokens"] == [{"token_id": 2, "token": " cat", "count": 7, "mean_activation": 0.8}]
    assert first["label_count"] == 0 and first["latest_verdict"] is None


@pytest.mark.parametrize("sort", ["density", "max_activation"])
def test_features_sort_by_a_statistic_in_both_orders(client: TestClient, built: BuiltDatabase, sort: str) -> None:
    url = f"/api/dictionaries/{built.small_id}/features"
    desc = client.get(url, params={"sort": sort, "order": "desc", "limit": 5}).json()["features"]
    assert [f["index"] for f in desc] == [15, 14, 13, 12, 11]
    asc = client.get(url, params={"sort": sort, "order": "asc", "limit": 4}).json()["features"]
    # The two dead features have density and max activation 0: they come first, by index.
    assert [f["index"] for f in asc] == [3, 7, 0, 1]


def test_features_sort_by_label_status(client: TestClient, built: BuiltDatabase, session) -> None:
    add_labels(session, built.small_hash, [(9, "ann", "monosemantic"), (4, "bob", "polysemantic")])
    url = f"/api/dictionaries/{built.small_id}/features"
    labelled_first = client.get(url, params={"sort": "label_status", "order": "desc", "limit": 3}).json()
    assert [f["index"] for f in labelled_first["features"]] == [4, 9, 0]
    assert labelled_first["features"][0]["label_count"] == 1
    assert labelled_first["features"][0]["latest_verdict"] == "polysemantic"
    unlabelled_first = client.get(url, params={"sort": "label_status", "order": "asc", "offset": 12}).json()
    assert [f["index"] for f in unlabelled_first["features"]] == [14, 15, 4, 9]


def test_features_limit_and_offset_page_through(client: TestClient, built: BuiltDatabase) -> None:
    url = f"/api/dictionaries/{built.large_id}/features"
    body = client.get(url, params={"limit": 10, "offset": 25}).json()
    assert body["total"] == LARGE_SIZE
    assert [f["index"] for f in body["features"]] == list(range(25, 32))


def test_features_q_filters_by_top_token_text_case_insensitively(client: TestClient, built: BuiltDatabase) -> None:
    url = f"/api/dictionaries/{built.large_id}/features"
    # Feature i's text is its own top token then feature i+1's: "cat" appears for i % 8 in {0, 1}.
    body = client.get(url, params={"q": "CAT"}).json()
    expected = [i for i in range(LARGE_SIZE) if i % 8 in (0, 1)]
    assert body["total"] == len(expected)
    assert [f["index"] for f in body["features"]] == expected
    ran = client.get(url, params={"q": "ran"}).json()
    assert ran["total"] == len([i for i in range(LARGE_SIZE) if i % 8 in (6, 7)])
    assert client.get(url, params={"q": "%"}).json()["total"] == 0
    assert TOKENS[top_token_id(1)] == " cat"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"offset": -1}, "offset"),
        ({"sort": "colour"}, "sort"),
        ({"order": "up"}, "order"),
        ({"limit": "ten"}, "limit"),
    ],
)
def test_features_reject_bad_parameters_naming_the_field(
    client: TestClient, built: BuiltDatabase, params: dict, field: str
) -> None:
    response = client.get(f"/api/dictionaries/{built.small_id}/features", params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", field]


def test_feature_detail_decodes_contexts_and_names_tokens(client: TestClient, built: BuiltDatabase) -> None:
    response = client.get(f"/api/dictionaries/{built.small_id}/features/2")
    assert response.status_code == 200
    body = response.json()
    token = TOKENS[top_token_id(2)]
    assert (body["index"], body["alive"], body["dictionary_hash"]) == (2, True, built.small_hash)
    assert body["max_activation"] == pytest.approx(2.0) and body["mean_activation"] == pytest.approx(1.0)
    top = body["top_contexts"]
    assert [c["position"] for c in top] == [102, 202]
    assert top[0]["tokens"] == [" the", " cat", token, " on", " mat"]
    assert top[0]["activations"] == pytest.approx([0.0, 0.25, 2.0, 0.5, 0.0])
    assert top[0]["center"] == 2
    # The second window starts outside the document: that slot is dropped and the centre moves left.
    assert top[1]["tokens"] == [" the", token, ".", "\n"] and top[1]["center"] == 1
    groups = body["quantile_samples"]
    assert [g["interval"] for g in groups] == [0, 2]
    assert (groups[1]["low"], groups[1]["high"]) == pytest.approx((0.4, 0.6))
    assert [c["position"] for c in groups[1]["contexts"]] == [320, 300]
    assert body["histogram"]["counts"] == [5, 3, 0, 1]
    assert body["histogram"]["edges"] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])
    assert body["logit_effects"]["promoted"][0] == {"token_id": 2, "token": " cat", "value": 0.5}
    assert body["logit_effects"]["promoted"][1]["token"] == "<40>"
    assert body["logit_effects"]["suppressed"] == [{"token_id": 6, "token": ".", "value": -0.4}]
    assert body["pos_tags"] == [{"tag": "NN", "count": 4}, {"tag": "VBD", "count": 2}]
    neighbour = body["neighbours"][0]
    assert (neighbour["dictionary_id"], neighbour["index"], neighbour["direction"]) == (built.large_id, 1, "larger")
    assert body["labels"] == []


def test_feature_detail_of_an_unindexed_neighbour_has_no_dictionary_id(
    client: TestClient, built: BuiltDatabase
) -> None:
    body = client.get(f"/api/dictionaries/{built.large_id}/features/0").json()
    assert body["neighbours"][0]["dictionary_id"] is None


def test_feature_detail_lists_labels_newest_first(client: TestClient, built: BuiltDatabase, session) -> None:
    add_labels(
        session,
        built.small_hash,
        [(5, "ann", "polysemantic"), (5, "bob", "monosemantic"), (6, "ann", "uninterpretable")],
    )
    labels = client.get(f"/api/dictionaries/{built.small_id}/features/5").json()["labels"]
    assert [(label["labeller"], label["verdict"]) for label in labels] == [
        ("bob", "monosemantic"),
        ("ann", "polysemantic"),
    ]


def test_dead_feature_detail_has_no_contexts(client: TestClient, built: BuiltDatabase) -> None:
    body = client.get(f"/api/dictionaries/{built.small_id}/features/3").json()
    assert body["alive"] is False and body["top_contexts"] == [] and body["quantile_samples"] == []


@pytest.mark.parametrize(
    "path",
    [
        "/api/dictionaries/99/features",
        "/api/dictionaries/99/features/0",
        "/api/dictionaries/99/estimate",
        "/api/dictionaries/99/next-feature?labeller=ann",
        "/api/nothing-here",
    ],
)
def test_unknown_dictionary_is_a_json_404(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert "detail" in response.json()


def test_unknown_feature_is_a_404_naming_the_index_range(client: TestClient, built: BuiltDatabase) -> None:
    response = client.get(f"/api/dictionaries/{built.small_id}/features/16")
    assert response.status_code == 404
    assert "0 to 15" in response.json()["detail"]
    assert client.get(f"/api/dictionaries/{built.small_id}/features/-1").status_code == 422


def test_feature_count_reads_metrics_json(client: TestClient, tmp_path: Path) -> None:
    assert client.get("/api/feature-count").status_code == 404
    metrics = {
        "runs": [],
        "mmcs_with_larger": [
            {"arch": "relu", "l1": 0.1, "dict_size": 32, "larger_size": 64, "mmcs_with_larger": 0.91},
            {"arch": "topk", "k": 8, "dict_size": 32, "larger_size": 64, "mmcs_with_larger": 0.88},
        ],
        "feature_count_estimate": {"value": 644, "low": 600, "high": 700, "method": "stable atoms", "sparsity": "relu"},
    }
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    response = client.get("/api/feature-count")
    assert response.status_code == 200
    body = response.json()
    assert body["mmcs_with_larger"][0] == {**metrics["mmcs_with_larger"][0], "k": None}
    assert body["mmcs_with_larger"][1]["k"] == 8
    assert body["feature_count_estimate"]["value"] == 644
    assert body["feature_count_estimate"]["sparsity"] == "relu"
    assert body["feature_count_estimate"]["peak_at_largest_pair"] is None
    assert "lower bound" not in client.get("/").text


def test_feature_count_still_rising_at_the_largest_sizes_is_a_lower_bound(client: TestClient, tmp_path: Path) -> None:
    estimate = {"value": 1417, "low": 1103, "high": 1549, "method": "stable atoms", "sparsity": "relu 0.3"}
    estimate |= {"curve": {"1024-2048": 793, "2048-4096": 1417}, "peak_at_largest_pair": True}
    (tmp_path / "metrics.json").write_text(json.dumps({"runs": [], "feature_count_estimate": estimate}))
    body = client.get("/api/feature-count").json()["feature_count_estimate"]
    assert body["peak_at_largest_pair"] is True and body["curve"] == {"1024-2048": 793, "2048-4096": 1417}
    assert 'class="badge moving" title="the count of stable atoms still rises' in client.get("/").text


def test_feature_count_of_a_corrupt_metrics_file_says_which_file(client: TestClient, tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text("{not json")
    response = client.get("/api/feature-count")
    assert response.status_code == 500
    assert "metrics.json" in response.json()["detail"]


CONVERGENCE = {
    "window": [0.5, 0.7],
    "tolerance": 0.02,
    "runs": {
        "relu_n16_l10.1": {
            "window": [0.5, 0.7],
            "objective_fall": 0.004,
            "converged": True,
            "objective": 0.12,
            "fvu": 0.03,
            "l0": 9.5,
        },
        "topk_n32_k4": {
            "window": [0.5, 0.7],
            "objective_fall": 0.081,
            "converged": False,
            "objective": 0.011,
            "fvu": 0.015,
            "l0": 4.0,
        },
    },
}


def test_convergence_reads_metrics_json(client: TestClient, tmp_path: Path) -> None:
    missing = client.get("/api/convergence")
    assert missing.status_code == 404 and "metrics.json" in missing.json()["detail"]
    (tmp_path / "metrics.json").write_text(json.dumps({"runs": []}))  # a run made before tracking existed
    assert client.get("/api/convergence").status_code == 404
    (tmp_path / "metrics.json").write_text(json.dumps({"runs": [], "convergence": CONVERGENCE}))
    body = client.get("/api/convergence").json()
    assert body["window"] == [0.5, 0.7] and body["tolerance"] == 0.02 and body["preset"] is None
    assert body["runs"] == [
        {
            "name": "relu_n16_l10.1",
            "converged": True,
            "objective_fall": 0.004,
            "objective": 0.12,
            "fvu": 0.03,
            "l0": 9.5,
        },
        {
            "name": "topk_n32_k4",
            "converged": False,
            "objective_fall": 0.081,
            "objective": 0.011,
            "fvu": 0.015,
            "l0": 4.0,
        },
    ]


def test_convergence_of_a_record_of_another_shape_says_which_file(client: TestClient, tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps({"convergence": {"window": [0.5, 0.7], "runs": []}}))
    response = client.get("/api/convergence")
    assert response.status_code == 500
    assert "metrics.json" in response.json()["detail"]


def test_openapi_declares_every_api_route_with_a_response_schema(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert all(path.startswith("/api/") for path in schema["paths"])
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            ok = operation["responses"].get("200") or operation["responses"].get("201")
            assert ok is not None, (method, path)
            if path == "/api/labels/export":
                assert {"text/csv", "application/x-ndjson"} <= set(ok["content"])
                continue
            assert "$ref" in json.dumps(ok["content"]["application/json"]["schema"]), (method, path)
    assert "/api/activations" in schema["paths"] and "/api/labels/import" in schema["paths"]
