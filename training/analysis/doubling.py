"""The doubling standard: a number holds when it barely moves between half the training rows and all of them.

Every sweep keeps each SAE as it was at half its rows. Both the half and the end SAE are measured on the
same held-out rows, and an SAE holds when its held-out FVU moved by at most 3% (relative), its L0 by at
most 5%, its dead and its rare counts each by at most 2% of the dictionary size, and its MMCS with the next
larger dictionary by at most 0.01. A feature-count estimate holds when it moved by at most 10%. A number
that does not hold is "still moving", reported with what moved, never as final.

The half SAE is the same training run caught at half its steps, before the learning rate decays, so it is
noisier than a run scheduled for half the rows would be: the test errs towards "still moving".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from training.analysis.metrics import evaluate
from training.saes import SparseAutoencoder


@dataclass(frozen=True)
class DoublingTolerances:
    """How far each number may move between half and all of the rows and still hold."""

    fvu_relative: float = 0.03
    l0_relative: float = 0.05
    dead_of_size: float = 0.02
    rare_of_size: float = 0.02
    mmcs_absolute: float = 0.01
    estimate_relative: float = 0.10

    def as_dict(self) -> dict:
        return asdict(self)


TOLERANCES = DoublingTolerances()


def _relative(half: float, end: float) -> float:
    return abs(end - half) / max(abs(end), 1e-12)


def sae_doubling(half: dict, end: dict, dict_size: int, tolerances: DoublingTolerances = TOLERANCES) -> dict:
    """Whether one SAE's numbers hold: ``{"holds", "moved": [{metric, half, end, change, tolerance}]}``.

    ``half`` and ``end`` map ``fvu``, ``l0``, ``dead``, ``rare`` and ``mmcs_with_larger`` to values (a
    missing or None value is not compared: the largest size has no larger dictionary).
    """
    checks = [
        ("fvu", "relative", tolerances.fvu_relative),
        ("l0", "relative", tolerances.l0_relative),
        ("dead", "of_size", tolerances.dead_of_size),
        ("rare", "of_size", tolerances.rare_of_size),
        ("mmcs_with_larger", "absolute", tolerances.mmcs_absolute),
    ]
    moved, compared = [], []
    for metric, kind, tolerance in checks:
        a, b = half.get(metric), end.get(metric)
        if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
            continue
        if kind == "relative":
            change = _relative(a, b)
        elif kind == "of_size":
            change = abs(b - a) / dict_size
        else:
            change = abs(b - a)
        compared.append(metric)
        if change > tolerance:
            moved.append(
                {"metric": metric, "half": a, "end": b, "change": change, "tolerance": tolerance, "kind": kind}
            )
    return {"holds": not moved, "moved": moved, "compared": compared}


def estimate_doubling(half: float | None, end: float | None, tolerances: DoublingTolerances = TOLERANCES) -> dict:
    """Whether a feature-count estimate holds; ``holds`` is None when either side has no value."""
    if half is None or end is None:
        return {"holds": None, "half": half, "end": end, "change": None, "tolerance": tolerances.estimate_relative}
    change = _relative(half, end)
    return {
        "holds": change <= tolerances.estimate_relative,
        "half": half,
        "end": end,
        "change": change,
        "tolerance": tolerances.estimate_relative,
    }


@dataclass
class HeldOutSnapshot:
    """An SAE measured on held-out rows: FVU, L0, and its dead and rare latents there."""

    fvu: float
    l0: float
    dead: int
    rare: int
    dead_mask: torch.Tensor
    dead_or_rare_mask: torch.Tensor

    def numbers(self) -> dict:
        return {"fvu": self.fvu, "l0": self.l0, "dead": self.dead, "rare": self.rare}


def heldout_min_firings(min_firings: int, heldout_rows: int, index_rows: int) -> int:
    """The index's firing threshold scaled from its corpus to the held-out rows (at least one firing)."""
    return max(1, round(min_firings * heldout_rows / max(index_rows, 1)))


@torch.no_grad()
def heldout_snapshot(
    sae: SparseAutoencoder, x: torch.Tensor, min_firings: int, min_contribution: float, chunk: int = 8192
) -> HeldOutSnapshot:
    """FVU, L0 and dead/rare counts of ``sae`` on rows ``x``, with the evidence criteria applied to those rows.

    A latent is dead when it never fires on ``x``, rare when it fires on fewer than ``min_firings`` of them
    or its largest contribution (max activation x atom norm) is below ``min_contribution`` of the rows' RMS
    norm. Half and end SAEs are judged on the same rows, so the counts compare even where ``x`` is far
    smaller than the index corpus the app's counts come from.
    """
    evaluation = evaluate(sae, x)
    n = sae.config.dict_size
    fires = torch.zeros(n, dtype=torch.long)
    largest = torch.zeros(n)
    for start in range(0, x.shape[0], chunk):
        codes = sae.encode(x[start : start + chunk])
        fires += (codes > 0).sum(dim=0)
        largest = torch.maximum(largest, codes.max(dim=0).values)
    rms = x.pow(2).sum(dim=1).mean().sqrt()
    contribution = largest * sae.W_dec.norm(dim=1)
    dead = fires == 0
    rare = ~dead & ((fires < min_firings) | (contribution < min_contribution * rms))
    return HeldOutSnapshot(
        fvu=evaluation.fvu,
        l0=evaluation.l0,
        dead=int(dead.sum()),
        rare=int(rare.sum()),
        dead_mask=dead,
        dead_or_rare_mask=dead | rare,
    )
