"""The estimate arithmetic on known counts: Wilson intervals, labellable estimate, kappas, quartiles."""

from __future__ import annotations

import numpy as np
import pytest

from app.services.estimates import (
    Z_95,
    cohen_kappa,
    density_quartiles,
    fleiss_kappa,
    labellable_estimate,
    labeller_agreement,
    majority_monosemantic,
    wilson_interval,
)


def wilson_by_quadratic(k: int, n: int) -> tuple[float, float]:
    """Wilson bounds as the two roots in p of (k/n - p)^2 = z^2 p (1 - p) / n, solved with numpy."""
    phat, c = k / n, Z_95**2 / n
    roots = np.roots([1 + c, -(2 * phat + c), phat**2])
    return float(min(roots.real)), float(max(roots.real))


def test_wilson_interval_of_18_in_30_matches_the_quadratic_roots_and_published_values() -> None:
    low, high = wilson_interval(18, 30)
    assert (low, high) == pytest.approx(wilson_by_quadratic(18, 30), abs=1e-12)
    # The usual tables give 0.4232 to 0.7541 for 18/30.
    assert low == pytest.approx(0.4232, abs=5e-5)
    assert high == pytest.approx(0.7541, abs=5e-5)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (10, 10), (1, 3), (250, 600)])
def test_wilson_interval_stays_in_unit_range_and_matches_the_roots(k: int, n: int) -> None:
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0
    expected_low, expected_high = wilson_by_quadratic(k, n)
    assert low == pytest.approx(max(0.0, expected_low), abs=1e-9)
    assert high == pytest.approx(min(1.0, expected_high), abs=1e-9)


def test_wilson_interval_without_trials_is_everything_and_bad_counts_raise() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(4, 3)


def test_labellable_estimate_scales_the_fraction_and_its_bounds_by_alive() -> None:
    result = labellable_estimate(alive=500, labelled=30, monosemantic=18)
    low, high = wilson_by_quadratic(18, 30)
    assert result.fraction == pytest.approx(0.6)
    assert result.estimate == pytest.approx(300.0)
    assert result.estimate_low == pytest.approx(500 * low)
    assert result.estimate_high == pytest.approx(500 * high)
    assert 211.5 < result.estimate_low < 211.7 and 377.0 < result.estimate_high < 377.1


def test_labellable_estimate_without_labels_has_no_point_and_the_widest_bounds() -> None:
    result = labellable_estimate(alive=40, labelled=0, monosemantic=0)
    assert result.fraction is None and result.estimate is None
    assert (result.estimate_low, result.estimate_high) == (0.0, 40.0)


def test_majority_needs_more_than_half_so_ties_are_not_monosemantic() -> None:
    assert majority_monosemantic(["monosemantic"])
    assert majority_monosemantic(["monosemantic", "monosemantic", "polysemantic"])
    assert not majority_monosemantic(["monosemantic", "polysemantic"])
    assert not majority_monosemantic(["monosemantic", "polysemantic", "uninterpretable"])
    assert not majority_monosemantic(["uninterpretable"])


def test_cohen_kappa_on_a_hand_computed_example() -> None:
    # Agreement on 7 of 10; marginals 5/3/2 for both, so chance agreement (25 + 9 + 4) / 100 = 0.38.
    a = "m m m m p p u u m p".split()
    b = "m m m p p p u m m u".split()
    names = {"m": "monosemantic", "p": "polysemantic", "u": "uninterpretable"}
    result = cohen_kappa([(names[x], names[y]) for x, y in zip(a, b, strict=True)])
    assert result.observed == pytest.approx(0.7)
    assert result.expected == pytest.approx(0.38)
    assert result.kappa == pytest.approx(0.32 / 0.62)
    assert (result.method, result.features, result.labellers) == ("cohen", 10, 2)


def test_fleiss_kappa_on_a_hand_computed_example() -> None:
    # Per-feature agreement 1, 1/3, 1/3, 0 (mean 5/12); shares 6/12, 4/12, 2/12 (chance 14/36): kappa 1/22.
    m, p, u = "monosemantic", "polysemantic", "uninterpretable"
    result = fleiss_kappa([[m, m, m], [m, m, p], [p, p, u], [m, p, u]])
    assert result.observed == pytest.approx(5 / 12)
    assert result.expected == pytest.approx(14 / 36)
    assert result.kappa == pytest.approx(1 / 22)


def test_kappa_is_undefined_when_every_verdict_is_the_same() -> None:
    m = "monosemantic"
    assert cohen_kappa([(m, m), (m, m)]).kappa is None
    assert fleiss_kappa([[m, m, m]]).kappa is None


def test_labeller_agreement_picks_cohen_for_two_and_fleiss_for_more_and_skips_single_labels() -> None:
    m, p = "monosemantic", "polysemantic"
    two = {1: {"ann": m, "bob": m}, 2: {"ann": p, "bob": m}, 3: {"ann": m}}
    result = labeller_agreement(two)
    assert (result.method, result.features, result.labellers) == ("cohen", 2, 2)
    assert result.observed == pytest.approx(0.5)
    three = {1: {"ann": m, "bob": m, "cy": p}, 2: {"ann": p, "cy": p}}
    result = labeller_agreement(three)
    assert (result.method, result.features, result.labellers) == ("fleiss", 2, 3)
    # Per-feature agreement 1/3 and 1; shares m 2/5, p 3/5.
    expected = 0.4**2 + 0.6**2
    assert result.kappa == pytest.approx((2 / 3 - expected) / (1 - expected))
    assert labeller_agreement({1: {"ann": m}}).method is None


def test_density_quartiles_split_by_density_into_near_equal_groups() -> None:
    densities = [0.5, 0.1, 0.3, 0.2, 0.9, 0.4, 0.7, 0.8, 0.6]
    groups = density_quartiles(densities)
    assert [len(g) for g in groups] == [2, 2, 2, 3]
    flat = [densities[i] for g in groups for i in g]
    assert flat == sorted(densities)
    assert density_quartiles([]) == [[], [], [], []]
