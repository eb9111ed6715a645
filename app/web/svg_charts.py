"""Geometry of the pages' small charts, drawn by the templates as inline SVG (no chart library, no scripts).

Functions here turn numbers into pixel positions; the templates only place the shapes, so the markup
stays autoescaped and the Content-Security-Policy needs no inline styles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.web.token_display import format_number

MAX_SERIES_CLASSES = 5  # CSS series-0 .. series-4


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass
class Tick:
    position: float
    label: str


@dataclass
class HistogramChart:
    """Bars of a histogram with log-scaled heights, in a width x height box with room for the axes' labels."""

    width: int
    height: int
    baseline: float
    bars: list[Bar]
    x_ticks: list[Tick]
    total: int
    left: float = 0.0  # where the bars start: the y labels sit left of it
    y_ticks: list[Tick] = field(default_factory=list)  # firing counts (1, 10, 100, ...) at their heights


HISTOGRAM_LEFT = 34.0  # room for y labels up to "100k"


def _count_label(count: int) -> str:
    if count >= 1_000_000:
        return f"{count // 1_000_000}M"
    if count >= 1000:
        return f"{count // 1000}k"
    return str(count)


def histogram_chart(
    counts: Sequence[int], edges: Sequence[float], width: int = 640, height: int = 150
) -> HistogramChart:
    """Bars for counts over bins with the given edges (len(counts) + 1); heights log-scaled so rare bins show.

    The y axis is labelled at powers of ten of the count, so a bar's height can be read as a number of firings.
    """
    top, bottom = 6.0, 22.0
    baseline = height - bottom
    usable = baseline - top
    n = len(counts)
    peak = max(counts, default=0)
    left = HISTOGRAM_LEFT if peak > 0 else 0.0
    plot = width - left
    bars: list[Bar] = []
    y_ticks: list[Tick] = []
    if n and peak > 0:
        step = plot / n
        gap = 1.0 if step > 4 else 0.0
        for i, count in enumerate(counts):
            if count <= 0:
                continue
            h = max(1.0, usable * math.log1p(count) / math.log1p(peak))
            low, high = (edges[i], edges[i + 1]) if len(edges) > i + 1 else (float(i), float(i + 1))
            title = f"{format_number(low)} – {format_number(high)}: {count:,}"
            bars.append(
                Bar(x=left + i * step + gap / 2, y=baseline - h, width=max(step - gap, 0.5), height=h, title=title)
            )
        power = 1
        while power <= peak:
            y_ticks.append(
                Tick(position=baseline - usable * math.log1p(power) / math.log1p(peak), label=_count_label(power))
            )
            power *= 10
    ticks: list[Tick] = []
    if len(edges) >= 2:
        for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
            value = edges[0] + fraction * (edges[-1] - edges[0])
            ticks.append(Tick(position=left + fraction * plot, label=format_number(value)))
    return HistogramChart(
        width=width,
        height=height,
        baseline=baseline,
        bars=bars,
        x_ticks=ticks,
        total=sum(counts),
        left=left,
        y_ticks=y_ticks,
    )


@dataclass
class Point:
    x: float
    y: float
    y_low: float
    y_high: float
    title: str


@dataclass
class Series:
    name: str
    css_class: str
    points: list[Point] = field(default_factory=list)

    @property
    def polyline(self) -> str:
        """The SVG ``points`` attribute joining the series' points."""
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


@dataclass
class SizeChart:
    """A value with its interval against an x axis, one series per group: dictionary size on a log2 axis
    (``size_chart``) or evenly spaced categories such as density quartiles (``category_chart``)."""

    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    series: list[Series]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    y_label: str
    x_label: str = "dictionary size"


@dataclass
class SizePoint:
    """One dictionary's value and interval, as given to ``size_chart``."""

    dict_size: int
    value: float
    low: float
    high: float
    title: str


def size_chart(
    groups: dict[str, list[SizePoint]], y_label: str, width: int = 560, height: int = 260, y_max: float | None = None
) -> SizeChart | None:
    """Pixel positions of every group's points (x = log2 dictionary size); None when there is nothing to draw."""
    points = [p for group in groups.values() for p in group]
    if not points:
        return None
    left, right, top, bottom = 52.0, width - 16.0, 12.0, height - 34.0
    sizes = sorted({p.dict_size for p in points})
    lo_x, hi_x = math.log2(sizes[0]), math.log2(sizes[-1])
    if hi_x == lo_x:
        lo_x, hi_x = lo_x - 1, hi_x + 1
    ceiling = y_max if y_max is not None else _nice_ceiling(max(p.high for p in points))

    def x_of(size: int) -> float:
        return left + (math.log2(size) - lo_x) / (hi_x - lo_x) * (right - left)

    def y_of(value: float) -> float:
        return bottom - max(0.0, min(value, ceiling)) / ceiling * (bottom - top)

    series = []
    for i, (name, group) in enumerate(sorted(groups.items())):
        s = Series(name=name, css_class=f"series-{i % MAX_SERIES_CLASSES}")
        for p in sorted(group, key=lambda q: q.dict_size):
            s.points.append(
                Point(x=x_of(p.dict_size), y=y_of(p.value), y_low=y_of(p.low), y_high=y_of(p.high), title=p.title)
            )
        series.append(s)
    x_ticks = [Tick(position=x_of(s), label=f"{s:,}") for s in sizes]
    y_ticks = [Tick(position=y_of(ceiling * f), label=format_number(ceiling * f)) for f in (0.0, 0.25, 0.5, 0.75, 1.0)]
    return SizeChart(
        width=width,
        height=height,
        left=left,
        right=right,
        top=top,
        bottom=bottom,
        series=series,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        y_label=y_label,
    )


@dataclass
class CategoryPoint:
    """One category's value and interval, as given to ``category_chart``; no value draws no point."""

    label: str
    value: float | None
    low: float
    high: float
    title: str


def category_chart(
    points: Sequence[CategoryPoint],
    y_label: str,
    x_label: str,
    width: int = 340,
    height: int = 200,
    y_max: float = 1.0,
    series_name: str = "",
) -> SizeChart | None:
    """Evenly spaced categories, each with its value and interval bar on a linear y axis from 0 to y_max.

    Every category gets a tick; those without a value (nothing measured) get no point. None when no
    category has a value.
    """
    if not any(p.value is not None for p in points):
        return None
    left, right, top, bottom = 52.0, width - 16.0, 12.0, height - 34.0
    step = (right - left) / len(points)

    def x_of(i: int) -> float:
        return left + (i + 0.5) * step

    def y_of(value: float) -> float:
        return bottom - max(0.0, min(value, y_max)) / y_max * (bottom - top)

    series = Series(name=series_name, css_class="series-0")
    for i, p in enumerate(points):
        if p.value is not None:
            point = Point(x=x_of(i), y=y_of(p.value), y_low=y_of(p.low), y_high=y_of(p.high), title=p.title)
            series.points.append(point)
    return SizeChart(
        width=width,
        height=height,
        left=left,
        right=right,
        top=top,
        bottom=bottom,
        series=[series],
        x_ticks=[Tick(position=x_of(i), label=p.label) for i, p in enumerate(points)],
        y_ticks=[Tick(position=y_of(y_max * f), label=format_number(y_max * f)) for f in (0.0, 0.25, 0.5, 0.75, 1.0)],
        y_label=y_label,
        x_label=x_label,
    )


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x a power of ten that is >= value (1 for nothing positive)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power
