"""How many features are labellable: Wilson intervals, the labellable estimate, labeller agreement, and the
comparison of two groups' monosemantic fractions.

Everything here is plain arithmetic over counts and verdicts, with no database, so the numbers the API
reports can be checked by hand.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.db.models import VERDICTS

# The 97.5% quantile of the standard normal: the z of a two-sided 95% interval.
Z_95 = 1.959963984540054
ALPHA = 0.05  # the level that matches a 95% interval


@dataclass(frozen=True)
class LabellableEstimate:
    """The fraction of labelled features judged monosemantic and what it implies for all alive features."""

    alive: int
    labelled: int
    monosemantic: int
    fraction: float | None
    fraction_low: float
    fraction_high: float
    estimate: float | None
    estimate_low: float
    estimate_high: float


@dataclass(frozen=True)
class ProportionDifference:
    """p1 - p2 of two binomial proportions, its 95% interval and Fisher's exact test; None where undefined."""

    difference: float | None  # None when either group has no trials
    low: float | None  # Newcombe's hybrid score interval (his method 10)
    high: float | None
    p_value: float | None  # two-sided Fisher's exact test of the 2 x 2 table
    interval_excludes_zero: bool | None
    # Both the interval excludes zero and p < ALPHA. At a few dozen labels the two can disagree (Fisher's
    # test is the more conservative), and a difference only one of them supports is not called significant.
    significant: bool | None


@dataclass(frozen=True)
class Agreement:
    """Chance-corrected agreement of labellers over the features more than one of them labelled."""

    method: str | None  # "cohen" (two labellers), "fleiss" (three or more), None (no overlap)
    kappa: float | None  # None when undefined: no overlap, or every verdict in one category
    observed: float | None
    expected: float | None
    features: int  # features with verdicts from two or more labellers
    labellers: int  # distinct labellers among those features


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion; (0, 1) when there are no trials.

    Unlike the normal approximation it stays inside [0, 1] and behaves at 0 and n successes, which matters
    for the few dozen labels a person gives in a sitting.
    """
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    # At 0 or n successes one bound is exactly 0 or 1; rounding would leave it just inside.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def labellable_estimate(alive: int, labelled: int, monosemantic: int) -> LabellableEstimate:
    """alive x the monosemantic fraction of a uniform sample of labelled alive features, with Wilson bounds."""
    low, high = wilson_interval(monosemantic, labelled)
    fraction = monosemantic / labelled if labelled else None
    return LabellableEstimate(
        alive=alive,
        labelled=labelled,
        monosemantic=monosemantic,
        fraction=fraction,
        fraction_low=low,
        fraction_high=high,
        estimate=alive * fraction if fraction is not None else None,
        estimate_low=alive * low,
        estimate_high=alive * high,
    )


POOLING_RULE = (
    "pooled over labellers: a feature counts as monosemantic when more than half of its labellers' latest "
    "verdicts say monosemantic, and a tie counts as not monosemantic (so with two labellers both must say it); "
    "a labeller's latest verdict on any latent of a group of near-duplicates is their verdict on the group; "
    '"too little evidence" verdicts judge nothing and are left out'
)


@dataclass(frozen=True)
class PairKappa:
    """Cohen's kappa of one pair of labellers over the features both judged."""

    labellers: tuple[str, str]
    features: int
    observed: float | None
    kappa: float | None


def majority_monosemantic(verdicts: Sequence[str]) -> bool:
    """Whether more than half of a feature's verdicts (one per labeller) say monosemantic; ties say no."""
    return sum(v == "monosemantic" for v in verdicts) * 2 > len(verdicts)


def density_quartiles(densities: Sequence[float]) -> list[list[int]]:
    """Positions into densities split into four groups of rising density, sizes differing by at most one.

    Equal densities are ordered by position, so the split is deterministic; with fewer than four features
    some groups are empty.
    """
    order = sorted(range(len(densities)), key=lambda i: (densities[i], i))
    n = len(order)
    bounds = [n * q // 4 for q in range(5)]
    return [order[bounds[q] : bounds[q + 1]] for q in range(4)]


def newcombe_interval(k1: int, n1: int, k2: int, n2: int, z: float = Z_95) -> tuple[float, float]:
    """Newcombe's hybrid score interval for k1/n1 - k2/n2, built from the two Wilson intervals.

    It keeps Wilson's good behaviour at small counts and at 0 or n successes, where the Wald interval of a
    difference collapses to a point; both groups need at least one trial.
    """
    if n1 <= 0 or n2 <= 0:
        raise ValueError(f"both groups need trials, got n1={n1} and n2={n2}")
    p1, p2 = k1 / n1, k2 / n2
    low1, high1 = wilson_interval(k1, n1, z)
    low2, high2 = wilson_interval(k2, n2, z)
    difference = p1 - p2
    low = difference - math.sqrt((p1 - low1) ** 2 + (high2 - p2) ** 2)
    high = difference + math.sqrt((high1 - p1) ** 2 + (p2 - low2) ** 2)
    return max(-1.0, low), min(1.0, high)


def fisher_exact_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value of Fisher's exact test that k1 of n1 and k2 of n2 come from one proportion.

    Sums the hypergeometric probabilities of every table with the same margins that is no more likely than
    the observed one; probabilities are compared as exact integers, so ties are never lost to rounding.
    """
    for k, n in ((k1, n1), (k2, n2)):
        if n < 0 or k < 0 or k > n:
            raise ValueError(f"need 0 <= successes <= trials, got {k} of {n}")
    successes, total = k1 + k2, n1 + n2
    # Tables with these margins differ only in the first group's successes x; each weighs C(K, x) C(N-K, n1-x).
    weights = [
        math.comb(successes, x) * math.comb(total - successes, n1 - x)
        for x in range(max(0, n1 - (total - successes)), min(successes, n1) + 1)
    ]
    observed = math.comb(successes, k1) * math.comb(total - successes, n1 - k1)
    extreme = sum(w for w in weights if w <= observed)
    return min(1.0, extreme / math.comb(total, n1))


def compare_proportions(k1: int, n1: int, k2: int, n2: int) -> ProportionDifference:
    """k1/n1 - k2/n2 with Newcombe's 95% interval and Fisher's exact p; all None when a group is empty."""
    if n1 == 0 or n2 == 0:
        return ProportionDifference(
            difference=None, low=None, high=None, p_value=None, interval_excludes_zero=None, significant=None
        )
    low, high = newcombe_interval(k1, n1, k2, n2)
    p_value = fisher_exact_p(k1, n1, k2, n2)
    excludes_zero = low > 0 or high < 0
    return ProportionDifference(
        difference=k1 / n1 - k2 / n2,
        low=low,
        high=high,
        p_value=p_value,
        interval_excludes_zero=excludes_zero,
        significant=excludes_zero and p_value < ALPHA,
    )


def cohen_kappa(pairs: Sequence[tuple[str, str]], categories: Sequence[str] = VERDICTS) -> Agreement:
    """Cohen's kappa of two labellers from their verdict pairs on the features both labelled."""
    n = len(pairs)
    if n == 0:
        return Agreement(method="cohen", kappa=None, observed=None, expected=None, features=0, labellers=2)
    observed = sum(a == b for a, b in pairs) / n
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(first[c] * second[c] for c in categories) / (n * n)
    return Agreement(
        method="cohen",
        kappa=_kappa(observed, expected),
        observed=observed,
        expected=expected,
        features=n,
        labellers=2,
    )


def fleiss_kappa(ratings: Sequence[Sequence[str]], categories: Sequence[str] = VERDICTS) -> Agreement:
    """Fleiss' kappa over features with two or more verdicts each; the number of verdicts may vary.

    With a varying number of raters per feature, each feature's agreement is averaged with equal weight
    and category shares are pooled over all verdicts (the usual extension of Fleiss' formula).
    """
    items = [list(r) for r in ratings if len(r) >= 2]
    if not items:
        return Agreement(method="fleiss", kappa=None, observed=None, expected=None, features=0, labellers=0)
    per_item = []
    totals: Counter[str] = Counter()
    for verdicts in items:
        counts = Counter(verdicts)
        totals.update(counts)
        m = len(verdicts)
        per_item.append((sum(c * c for c in counts.values()) - m) / (m * (m - 1)))
    observed = sum(per_item) / len(items)
    all_verdicts = sum(totals.values())
    expected = sum((totals[c] / all_verdicts) ** 2 for c in categories)
    return Agreement(
        method="fleiss",
        kappa=_kappa(observed, expected),
        observed=observed,
        expected=expected,
        features=len(items),
        labellers=max(len(r) for r in items),
    )


def labeller_agreement(verdicts_by_feature: Mapping[object, Mapping[str, str]]) -> Agreement:
    """Cohen's kappa when exactly two labellers overlap, Fleiss' kappa when three or more do.

    ``verdicts_by_feature`` maps a feature key to {labeller: that labeller's latest verdict}; features
    with a single labeller say nothing about agreement and are left out.
    """
    shared = {key: by_labeller for key, by_labeller in verdicts_by_feature.items() if len(by_labeller) >= 2}
    names = sorted({name for by_labeller in shared.values() for name in by_labeller})
    if not shared:
        return Agreement(method=None, kappa=None, observed=None, expected=None, features=0, labellers=0)
    if len(names) == 2:
        a, b = names
        return cohen_kappa([(v[a], v[b]) for v in shared.values()])
    result = fleiss_kappa([list(v.values()) for v in shared.values()])
    return Agreement(**{**result.__dict__, "labellers": len(names)})


def pairwise_agreement(verdicts_by_feature: Mapping[object, Mapping[str, str]]) -> list[PairKappa]:
    """Cohen's kappa of every pair of labellers, in name order, over the features both gave a verdict on."""
    names = sorted({name for by_labeller in verdicts_by_feature.values() for name in by_labeller})
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pairs = [(by[a], by[b]) for by in verdicts_by_feature.values() if a in by and b in by]
            result = cohen_kappa(pairs)
            out.append(PairKappa((a, b), len(pairs), result.observed, result.kappa))
    return out


def _kappa(observed: float, expected: float) -> float | None:
    """(observed - expected) / (1 - expected); undefined (None) when chance agreement is already total."""
    if math.isclose(expected, 1.0):
        return None
    return (observed - expected) / (1 - expected)
