"""The pure pieces behind the labelling card and /contrast: distinct passages, activation bands, sweep order,
the one-line takeaway and marked targets."""

from __future__ import annotations

from app.services.schemas import (
    AucOut,
    Context,
    ContrastFeatureOut,
    ContrastOut,
    ProbeOut,
    QuantileGroup,
)
from app.web.card_evidence import bands, distinct_passages, one_line
from app.web.contrast_view import contrast_rows, contrast_takeaway, marked_target


def context(position: int, width: int = 9, center: int = 4) -> Context:
    return Context(tokens=[f"t{i}" for i in range(width)], activations=[0.0] * width, center=center, position=position)


def test_overlapping_windows_of_one_passage_are_shown_once_the_strongest_first() -> None:
    top = [context(100), context(103), context(200), context(95), context(300)]
    assert [c.position for c in distinct_passages(top)] == [100, 200, 300]
    # Samples that repeat a top context's passage are dropped too.
    samples = [context(202), context(500)]
    assert [c.position for c in distinct_passages(samples, taken=top)] == [500]


def test_a_card_line_keeps_the_centre_and_a_few_tokens_each_side() -> None:
    line = one_line(context(50, width=33, center=16), half_window=3)
    assert line.tokens == ["t13", "t14", "t15", "t16", "t17", "t18", "t19"] and line.center == 3


def test_quantile_intervals_merge_into_high_middle_and_low_bands() -> None:
    groups = [
        QuantileGroup(interval=i, low=i / 10, high=(i + 1) / 10, contexts=[context(1000 * i), context(1000 * i + 500)])
        for i in range(10)
    ]
    result = bands(groups, taken=[context(9000)])
    assert [b.name for b in result] == ["high", "middle", "low"]
    assert [(b.low, b.high) for b in result] == [(0.6, 1.0), (0.3, 0.6), (0.0, 0.3)]
    assert result[0].contexts[0].position == 9500  # 9000 repeats a top context; strongest interval first


def auc(value: float) -> AucOut:
    return AucOut(value=value, low=value - 0.05, high=value + 0.05)


def feature(name: str, value: float, precision: float | None = 0.03) -> ContrastFeatureOut:
    return ContrastFeatureOut(
        dictionary=name,
        dictionary_id=None,
        index=7,
        auc=auc(value),
        fires_more_on="a",
        fire_rate_a=0.5,
        fire_rate_b=0.1,
        contexts=[],
        top_contexts=[],
        corpus_fire_count=100,
        corpus_precision=precision,
    )


def result(names: list[str]) -> ContrastOut:
    probe = ProbeOut(
        layer=2, site="mlp", dim=64, auc=auc(0.86), best_unit=3, best_unit_auc=auc(0.7), best_unit_more_on="a"
    )
    return ContrastOut(
        a="x",
        b="y",
        positions_a=10,
        positions_b=10,
        dropped_overlap=0,
        heldout_a=5,
        heldout_b=5,
        harvested_layer=2,
        probes=[probe],
        features={name: [feature(name, 0.6 + i / 100)] for i, name in enumerate(names)},
        pairs={},
        seed=0,
        config={},
        indexed=[],
        matched_a=10,
        matched_b=10,
    )


def test_dictionaries_are_listed_by_size_as_numbers_not_text() -> None:
    names = ["relu_n1024_l10.3", "relu_n128_l10.3", "relu_n2048_l10.3", "relu_n256_l10.3"]
    rows = contrast_rows(result(names), [])
    assert [r.name for r in rows] == ["relu_n128_l10.3", "relu_n256_l10.3", "relu_n1024_l10.3", "relu_n2048_l10.3"]


def test_the_takeaway_compares_the_best_feature_with_the_probe_in_one_sentence() -> None:
    text = contrast_takeaway(result(["relu_n128_l10.3", "relu_n256_l10.3"]))
    assert text == "Best feature AUC 0.61 (relu_n256_l10.3 #7) vs layer-2 MLP probe 0.86; its corpus precision 3%."


def test_a_context_target_is_marked_and_the_rest_escaped() -> None:
    assert str(marked_target("Mr[[.]] <b>Smith")) == "Mr<mark>.</mark> &lt;b&gt;Smith"
