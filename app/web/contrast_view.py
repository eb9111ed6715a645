"""What ``/contrast`` shows beyond the search's JSON: its result in one sentence, the best features in sweep order
(sizes numerically), and contexts with their target marked rather than in ``[[...]]``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from markupsafe import Markup, escape

from app.services.schemas import ContrastFeatureOut, ContrastOut, ContrastPairOut, DictionaryOut

_TARGET = re.compile(r"\[\[(.*?)\]\]", re.DOTALL)
_NUMBER = re.compile(r"(\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class ContrastRow:
    """One dictionary's best feature and best pair, as the results table lists them."""

    name: str
    feature: ContrastFeatureOut
    pair: ContrastPairOut | None


def _natural_key(name: str) -> tuple:
    """A name's sort key with its numbers read as numbers (n128 before n1024), for dictionaries not indexed here."""
    return tuple((0, float(part)) if _NUMBER.fullmatch(part) else (1, part) for part in _NUMBER.split(name) if part)


def contrast_rows(result: ContrastOut, dictionaries: list[DictionaryOut]) -> list[ContrastRow]:
    """Each dictionary's best feature and pair, ordered by architecture, sparsity, then size (numerically)."""
    by_name = {d.name: d for d in dictionaries}
    rows = [
        ContrastRow(name=name, feature=features[0], pair=result.pairs.get(name))
        for name, features in result.features.items()
        if features
    ]

    def key(row: ContrastRow) -> tuple:
        d = by_name.get(row.name)
        if d is None:
            return (1, _natural_key(row.name))
        return (0, (d.layer if d.layer is not None else -1, d.arch, d.sparsity_key, d.sparsity_value, d.dict_size))

    return sorted(rows, key=key)


def contrast_takeaway(result: ContrastOut) -> str:
    """The result in one sentence: the best feature's held-out AUC against the probe on the SAEs' layer."""
    best = max((f[0] for f in result.features.values() if f), key=lambda f: f.auc.value, default=None)
    probe = next(
        (p for p in result.probes if p.layer == result.harvested_layer and p.site == "mlp"),
        max((p for p in result.probes if p.site == "mlp"), key=lambda p: p.auc.value, default=None),
    )
    parts = []
    if best is not None:
        parts.append(f"best feature AUC {best.auc.value:.2f} ({best.dictionary} #{best.index})")
    if probe is not None:
        parts.append(f"layer-{probe.layer} MLP probe {probe.auc.value:.2f}")
    sentence = " vs ".join(parts)
    if best is not None and best.corpus_precision is not None:
        sentence += f"; its corpus precision {100 * best.corpus_precision:.0f}%"
    if not sentence:
        return "No probe or feature to compare."
    return sentence[0].upper() + sentence[1:] + "."


def marked_target(text: str) -> Markup:
    """A context with its target (written ``[[...]]``) in a ``<mark>``, everything escaped."""
    pieces = []
    last = 0
    for match in _TARGET.finditer(text):
        pieces.append(escape(text[last : match.start()]))
        pieces.append(Markup("<mark>{}</mark>").format(match.group(1)))
        last = match.end()
    pieces.append(escape(text[last:]))
    return Markup("").join(pieces)
