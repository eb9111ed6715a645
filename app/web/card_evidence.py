"""What a labelling card shows of a feature's evidence: distinct passages, a few from each activation band.

A feature's top contexts are often overlapping windows of one passage, and its quantile samples may repeat
them; a person judging the feature learns nothing from the second copy. The card shows each passage once,
the strongest first, then samples from a low, a middle and a high band of the activation, and keeps the
rest one click away.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from app.services.schemas import Context, QuantileGroup

CARD_TOP_CONTEXTS = 8  # top contexts on the card above the fold
CARD_SAMPLES_PER_BAND = 2  # quantile samples per band above the fold
CARD_HALF_WINDOW = 12  # tokens each side of the centre on a card's one-line strip
BAND_NAMES = ("high", "middle", "low")


def passage_span(context: Context) -> tuple[int, int]:
    """The corpus positions [start, end) a context window covers."""
    start = context.position - context.center
    return start, start + len(context.tokens)


def distinct_passages(contexts: Iterable[Context], taken: Iterable[Context] = ()) -> list[Context]:
    """The contexts, in order, without any whose window overlaps an earlier one's or one of ``taken``."""
    spans = [passage_span(c) for c in taken]
    kept = []
    for context in contexts:
        start, end = passage_span(context)
        if any(start < other_end and other_start < end for other_start, other_end in spans):
            continue
        spans.append((start, end))
        kept.append(context)
    return kept


def one_line(context: Context, half_window: int = CARD_HALF_WINDOW) -> Context:
    """The context cut to ``half_window`` tokens each side of its centre, so the strip fits one line."""
    start = max(0, context.center - half_window)
    end = context.center + half_window + 1
    return Context(
        tokens=context.tokens[start:end],
        activations=context.activations[start:end],
        center=context.center - start,
        position=context.position,
    )


@dataclass(frozen=True)
class Band:
    """Samples from one third of the activation range (some of the equal-width intervals, merged)."""

    name: str  # "high", "middle" or "low"
    low: float
    high: float
    contexts: list[Context]


def bands(groups: list[QuantileGroup], taken: list[Context], count: int = len(BAND_NAMES)) -> list[Band]:
    """The quantile groups merged into ``count`` bands, strongest first, each passage once and none in ``taken``.

    The intervals are split into thirds in order (a remainder goes to the higher bands); a band's contexts
    run from its strongest interval down.
    """
    ordered = sorted(groups, key=lambda g: g.interval)
    seen = list(taken)
    result = []
    size, extra = divmod(len(ordered), count)
    stop = len(ordered)
    for position, name in enumerate(BAND_NAMES[:count]):
        width = size + (1 if position < extra else 0)
        part = ordered[stop - width : stop]
        stop -= width
        if not part:
            continue
        contexts = distinct_passages((c for g in reversed(part) for c in g.contexts), taken=seen)
        seen.extend(contexts)
        result.append(Band(name=name, low=part[0].low, high=part[-1].high, contexts=contexts))
    return result


def distinct_groups(groups: list[QuantileGroup], taken: list[Context]) -> list[QuantileGroup]:
    """The quantile groups with each passage once across all of them, and none already in ``taken``."""
    seen = list(taken)
    result = []
    for group in sorted(groups, key=lambda g: g.interval, reverse=True):
        contexts = distinct_passages(group.contexts, taken=seen)
        seen.extend(contexts)
        result.append(group.model_copy(update={"contexts": contexts}))
    return sorted(result, key=lambda g: g.interval)
