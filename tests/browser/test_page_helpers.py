"""The pages' display helpers: visible whitespace, activation shades, number formats and chart geometry."""

from __future__ import annotations

import math

import pytest

from app.web.svg_charts import SizePoint, histogram_chart, size_chart
from app.web.token_display import format_number, shade, token_pieces


def test_whitespace_is_made_visible() -> None:
    assert token_pieces(" the") == [(False, " the")]
    assert token_pieces(" the", standalone=True) == [(True, "·"), (False, "the")]
    assert token_pieces("\n\n") == [(True, "↵↵")]
    assert token_pieces("  ") == [(True, "··")]
    assert token_pieces("a\tb") == [(False, "a"), (True, "⇥"), (False, "b")]
    assert token_pieces("") == [(True, "∅")]


@pytest.mark.parametrize(
    ("value", "top", "expected"),
    [(0.0, 2.0, 0), (2.0, 2.0, 10), (1.0, 2.0, 5), (0.001, 2.0, 1), (3.0, 2.0, 10), (1.0, 0.0, 0), (None, 1.0, 0)],
)
def test_shade_is_a_tenth_of_the_maximum(value: float | None, top: float, expected: int) -> None:
    assert shade(value, top) == expected
    assert shade(math.nan, 1.0) == 0


def test_format_number() -> None:
    assert [format_number(v) for v in (None, 0, 0.12345, 123.4, 12345.6, 1.5e-6)] == [
        "–",
        "0",
        "0.123",
        "123",
        "12,346",
        "1.5e-06",
    ]


def test_histogram_bars_are_log_scaled_and_skip_empty_bins() -> None:
    chart = histogram_chart([100, 0, 10, 1], [0.0, 1.0, 2.0, 3.0, 4.0], width=400, height=120)
    step = (400 - chart.left) / 4  # the bars start right of the y labels
    assert chart.left > 0 and [b.x for b in chart.bars] == pytest.approx(
        [chart.left + i * step + 0.5 for i in (0, 2, 3)]
    )  # half a gap in
    heights = [b.height for b in chart.bars]
    assert heights[0] == pytest.approx(chart.baseline - 6.0)
    assert heights[0] > heights[1] > heights[2] > 0
    assert heights[1] == pytest.approx(heights[0] * math.log1p(10) / math.log1p(100))
    assert chart.bars[1].title == "2 – 3: 10" and chart.total == 111
    assert [t.label for t in chart.x_ticks] == ["0", "1", "2", "3", "4"]
    # The y axis reads as firings: ticks at 1, 10 and 100, the top one at the tallest bar.
    assert [t.label for t in chart.y_ticks] == ["1", "10", "100"]
    assert chart.y_ticks[-1].position == pytest.approx(chart.bars[0].y)
    assert chart.y_ticks[1].position == pytest.approx(chart.bars[1].y)
    assert histogram_chart([0, 0], [0.0, 1.0, 2.0]).bars == []


def test_size_chart_places_sizes_on_a_log2_axis() -> None:
    points = [
        SizePoint(64, 10.0, 5.0, 20.0, "a"),
        SizePoint(16, 4.0, 1.0, 8.0, "b"),
        SizePoint(256, 0.0, 0.0, 3.0, "c"),
    ]
    chart = size_chart({"relu": points}, "labellable", width=500, height=200)
    xs = [p.x for p in chart.series[0].points]
    assert xs[0] == chart.left and xs[2] == chart.right and xs[1] == pytest.approx((chart.left + chart.right) / 2)
    assert chart.y_ticks[-1].label == "20"  # the ceiling is the largest upper bound, rounded up to a nice number
    first = chart.series[0].points[0]
    assert first.y_low > first.y > first.y_high
    assert size_chart({}, "labellable") is None
