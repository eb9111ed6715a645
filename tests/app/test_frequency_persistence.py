"""Frequency and persistence vs monosemanticity: the two-proportion arithmetic, and ``?by=density`` and
``?by=persistence`` of the estimate on a dictionary with hand-chosen densities, MMCS values and labels.

The expected numbers are written out by hand below (quartile members, counts), and intervals are checked
against independent computations: Wilson bounds as quadratic roots, Newcombe's published table, scipy's
Fisher test.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from scipy.stats import fisher_exact
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Feature
from app.services.estimates import compare_proportions, fisher_exact_p, newcombe_interval
from tests.app.builders import BuiltDatabase, add_labels
from tests.app.test_estimates import wilson_by_quadratic

M, P, U = "monosemantic", "polysemantic", "uninterpretable"

# The small dictionary's alive features (3 and 7 are dead), with scrambled densities (1 and 4 tie) and
# MMCS with the larger dictionary (None: no larger one; 4 sits exactly on the 0.9 threshold).
DENSITY = {
    0: 0.05, 1: 0.002, 2: 0.03, 4: 0.002, 5: 0.1, 6: 0.001, 8: 0.04,
    9: 0.02, 10: 0.2, 11: 0.01, 12: 0.06, 13: 0.005, 14: 0.3, 15: 0.07,
}  # fmt: skip
MMCS = {
    0: 0.92, 1: 0.5, 2: 0.3, 4: 0.9, 5: 0.7, 6: 0.95, 8: 0.99,
    9: None, 10: 0.6, 11: 0.97, 12: 0.96, 13: 0.89, 14: 0.93, 15: 0.91,
}  # fmt: skip
# Sorted by density (ties by index): 6 1 4 | 13 11 9 2 | 8 0 12 | 15 5 10 14, groups of 3, 4, 3, 4.
QUARTILES = [[6, 1, 4], [13, 11, 9, 2], [8, 0, 12], [15, 5, 10, 14]]
DENSITY_RANGES = [(0.001, 0.002), (0.005, 0.03), (0.04, 0.06), (0.07, 0.3)]
LABELS = [
    (6, "ann", M),
    (1, "ann", P),
    (4, "ann", M),
    (4, "bob", P),  # a tie: labelled, not monosemantic
    (13, "ann", M),
    (13, "ann", P),  # relabelled: the latest verdict counts
    (11, "ann", M),
    (2, "ann", U),
    (8, "ann", M),
    (8, "bob", M),
    (8, "cy", P),  # two of three: monosemantic
    (0, "ann", M),
    (15, "ann", M),
    (5, "ann", M),
    (10, "ann", P),
    (14, "ann", M),
    (3, "ann", M),  # dead: never counts
]
# Labelled and monosemantic per quartile, from the labels above.
QUARTILE_COUNTS = [(3, 1), (3, 1), (2, 2), (4, 3)]


def shape_small_dictionary(session: Session, built: BuiltDatabase) -> None:
    """Give the small dictionary's features the densities and MMCS above (dead 3 a high MMCS) and the labels."""
    features = session.scalars(select(Feature).where(Feature.dictionary_id == built.small_id)).all()
    for feature in features:
        if feature.alive:
            feature.density = DENSITY[feature.index]
            feature.mmcs_with_larger = MMCS[feature.index]
        elif feature.index == 3:
            feature.mmcs_with_larger = 0.99
    session.commit()
    add_labels(session, built.small_hash, LABELS)


def assert_wilson(body: dict, k: int, n: int) -> None:
    low, high = wilson_by_quadratic(k, n)
    assert body["fraction_low"] == pytest.approx(max(0.0, low), abs=1e-9)
    assert body["fraction_high"] == pytest.approx(min(1.0, high), abs=1e-9)


def test_newcombe_interval_matches_newcombes_published_table() -> None:
    # Newcombe (1998), "Interval estimation for the difference between independent proportions", method 10.
    published = {
        (56, 70, 48, 80): (0.0524, 0.3339),
        (9, 10, 3, 10): (0.1705, 0.8090),
        (6, 7, 2, 7): (0.0582, 0.8062),
        (5, 56, 0, 29): (-0.0381, 0.1926),
        (0, 10, 0, 20): (-0.1611, 0.2775),
        (10, 10, 0, 10): (0.6075, 1.0),
    }
    for counts, expected in published.items():
        assert newcombe_interval(*counts) == pytest.approx(expected, abs=6e-5), counts
    with pytest.raises(ValueError, match="trials"):
        newcombe_interval(1, 0, 1, 2)


@pytest.mark.parametrize("counts", [(6, 7, 1, 5), (0, 4, 4, 4), (3, 9, 11, 20), (30, 40, 15, 40), (0, 3, 0, 5)])
def test_fisher_exact_p_matches_scipy(counts: tuple[int, int, int, int]) -> None:
    k1, n1, k2, n2 = counts
    expected = fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="two-sided").pvalue
    assert fisher_exact_p(*counts) == pytest.approx(expected, rel=1e-9)


def test_compare_proportions_needs_both_tests_to_call_a_difference_significant() -> None:
    clear = compare_proportions(30, 40, 15, 40)
    assert clear.difference == pytest.approx(0.375)
    assert clear.interval_excludes_zero and clear.p_value < 0.05 and clear.significant
    # 6/7 vs 1/5: Newcombe's interval (0.094 to 0.859) excludes zero but Fisher's p is 0.072.
    borderline = compare_proportions(6, 7, 1, 5)
    assert borderline.low == pytest.approx(0.0939, abs=1e-4)
    assert borderline.p_value == pytest.approx(0.0720, abs=1e-4)
    assert borderline.interval_excludes_zero and not borderline.significant
    same = compare_proportions(5, 10, 4, 10)
    assert same.low < 0 < same.high and same.p_value == pytest.approx(1.0) and same.significant is False
    empty = compare_proportions(3, 4, 0, 0)
    assert (empty.difference, empty.low, empty.p_value, empty.significant) == (None, None, None, None)


def test_estimate_by_density_puts_known_features_in_known_quartiles(
    client: TestClient, built: BuiltDatabase, session: Session
) -> None:
    shape_small_dictionary(session, built)
    body = client.get(f"/api/dictionaries/{built.small_id}/estimate", params={"by": "density"}).json()
    assert (body["alive"], body["labelled"], body["monosemantic"]) == (14, 12, 7)
    assert body["persistence"] is None
    quartiles = body["quartiles"]
    assert [q["alive"] for q in quartiles] == [len(members) for members in QUARTILES]
    for q, members, (low, high), (labelled, mono) in zip(
        quartiles, QUARTILES, DENSITY_RANGES, QUARTILE_COUNTS, strict=True
    ):
        assert (q["density_low"], q["density_high"]) == pytest.approx((low, high))
        assert (min(DENSITY[i] for i in members), max(DENSITY[i] for i in members)) == pytest.approx((low, high))
        assert (q["labelled"], q["monosemantic"]) == (labelled, mono), q["quartile"]
        assert q["fraction"] == pytest.approx(mono / labelled)
        assert_wilson(q, mono, labelled)


def test_estimate_by_persistence_splits_at_the_threshold_and_leaves_out_features_without_a_larger_one(
    client: TestClient, built: BuiltDatabase, session: Session
) -> None:
    shape_small_dictionary(session, built)
    body = client.get(f"/api/dictionaries/{built.small_id}/estimate", params={"by": "persistence"}).json()
    assert body["quartiles"] is None
    p = body["persistence"]
    # Persistent (>= 0.9): 0 4 6 8 11 12 14 15, labelled all but 12, monosemantic all but 4 (a tie).
    # Others: 1 2 5 10 13, all labelled, only 5 monosemantic. Feature 9 has no larger dictionary.
    assert p["threshold"] == 0.9
    assert (p["persistent"]["alive"], p["persistent"]["labelled"], p["persistent"]["monosemantic"]) == (8, 7, 6)
    assert (p["not_persistent"]["alive"], p["not_persistent"]["labelled"], p["not_persistent"]["monosemantic"]) == (
        5,
        5,
        1,
    )
    assert (p["no_larger"], p["no_larger_labelled"]) == (1, 0)
    assert_wilson(p["persistent"], 6, 7)
    assert_wilson(p["not_persistent"], 1, 5)
    assert p["difference"] == pytest.approx(6 / 7 - 1 / 5)
    assert (p["difference_low"], p["difference_high"]) == pytest.approx(newcombe_interval(6, 7, 1, 5))
    assert p["p_value"] == pytest.approx(fisher_exact([[6, 1], [1, 4]]).pvalue)
    assert (p["interval_excludes_zero"], p["significant"]) == (True, False)

    both = client.get(
        f"/api/dictionaries/{built.small_id}/estimate",
        params=[("by", "density"), ("by", "persistence"), ("persistence_threshold", "0.95")],
    ).json()
    assert len(both["quartiles"]) == 4
    # At 0.95 only 6, 8, 11 and 12 persist: 3 labelled, all monosemantic; the other 10 alive have 9 labels.
    high, low = both["persistence"]["persistent"], both["persistence"]["not_persistent"]
    assert (high["alive"], high["labelled"], high["monosemantic"]) == (4, 3, 3)
    assert (low["alive"], low["labelled"], low["monosemantic"]) == (9, 9, 4)


def test_estimate_by_persistence_without_a_larger_dictionary_or_labels_gives_nulls(
    client: TestClient, built: BuiltDatabase, session: Session
) -> None:
    large = session.scalars(select(Feature).where(Feature.dictionary_id == built.large_id)).all()
    for feature in large:
        feature.mmcs_with_larger = None  # the largest dictionary of its sweep
    session.commit()
    add_labels(session, built.large_hash, [(0, "ann", M), (1, "ann", P)])
    p = client.get(f"/api/dictionaries/{built.large_id}/estimate", params={"by": "persistence"}).json()["persistence"]
    assert (p["persistent"]["alive"], p["not_persistent"]["alive"], p["no_larger"], p["no_larger_labelled"]) == (
        0,
        0,
        32,
        2,
    )
    assert [p[k] for k in ("difference", "difference_low", "difference_high", "p_value", "significant")] == [None] * 5
    # The builder's other dictionary: every alive feature sits exactly at 0.9, so all persist.
    small = client.get(f"/api/dictionaries/{built.small_id}/estimate", params={"by": "persistence"}).json()
    assert small["persistence"]["persistent"]["alive"] == 14 and small["persistence"]["not_persistent"]["alive"] == 0


def test_bad_by_and_threshold_name_the_field(client: TestClient, built: BuiltDatabase) -> None:
    url = f"/api/dictionaries/{built.small_id}/estimate"
    for params, field in (({"by": "size"}, "by"), ({"persistence_threshold": "1.5"}, "persistence_threshold")):
        response = client.get(url, params=params)
        assert response.status_code == 422, params
        assert response.json()["detail"][0]["loc"][:2] == ["query", field]  # by's loc also has the list position


def test_openapi_documents_both_breakdowns(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/api/dictionaries/{dictionary_id}/estimate"]["get"]
    assert "persistence_threshold" in {p["name"] for p in operation["parameters"]}
    assert "Newcombe" in operation["description"] and "?by=density&by=persistence" in operation["description"]
