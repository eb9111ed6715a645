"""How well a dictionary recovers features, and how many features there seem to be.

Decoders are passed as (n_atoms x d) tensors whose rows are the dictionary atoms.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from training.analysis.duplicates import DUPLICATE_COSINE, distinct_count
from training.runtime.device import moved_copy
from training.saes.base import SparseAutoencoder

RECOVERED_COSINE = 0.9


def _unit_rows(m: torch.Tensor) -> torch.Tensor:
    m = m.double()
    return m / m.norm(dim=1, keepdim=True).clamp_min(1e-12)


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every row of a with every row of b."""
    return _unit_rows(a) @ _unit_rows(b).T


def max_cosines(reference: torch.Tensor, candidates: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """For each row of reference, its largest cosine with any row of candidates (chunked for memory)."""
    cand = _unit_rows(candidates.to(reference.device))
    ref = _unit_rows(reference)
    return torch.cat([(ref[i : i + chunk] @ cand.T).max(dim=1).values for i in range(0, ref.shape[0], chunk)])


def mmcs(decoder: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean max cosine similarity: over ground-truth features, the best cosine with any atom."""
    return max_cosines(truth, decoder).mean().item()


def mmcs_with_larger(decoder: torch.Tensor, larger: torch.Tensor) -> float:
    """Over the atoms of a dictionary, the mean of each one's best cosine with a larger dictionary."""
    return max_cosines(decoder, larger).mean().item()


def one_to_one_cosine(decoder: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean cosine of a Hungarian one-to-one matching of features to atoms (unmatched features count 0).

    Unlike MMCS, one atom cannot stand in for several features, so duplicates are not rewarded.
    """
    cos = cosine_matrix(truth, decoder).numpy()
    rows, cols = linear_sum_assignment(cos, maximize=True)
    return float(cos[rows, cols].sum() / truth.shape[0])


def recovered_fraction(decoder: torch.Tensor, truth: torch.Tensor, threshold: float = RECOVERED_COSINE) -> float:
    """Fraction of ground-truth features matched by some atom at cosine >= threshold."""
    return (max_cosines(truth, decoder) >= threshold).double().mean().item()


@dataclass
class Evaluation:
    """Metrics of one SAE on a fixed evaluation set."""

    l0: float
    fvu: float
    mse: float
    dead_fraction: float
    dead: torch.Tensor
    sparsity_penalty: float = 0.0  # the objective's sparsity term per sample: the objective is mse plus this


@torch.no_grad()
def evaluate(
    sae: SparseAutoencoder, x: torch.Tensor, chunk: int = 8192, device: torch.device | str | None = None
) -> Evaluation:
    """L0 (mean active latents), FVU, per-sample squared error and sparsity penalty, and dead latents over x.

    A latent is dead when it never fires on the whole evaluation set. The SAE encodes on ``device`` (a copy
    is moved there; default: where the SAE is).
    """
    if device is not None:
        sae = moved_copy(sae, device)
    device = sae.W_dec.device
    fired = torch.zeros(sae.config.dict_size, dtype=torch.bool, device=device)
    err_sq, active, penalty = 0.0, 0, 0.0
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk].to(device)
        c = sae.encode(part)
        err_sq += (sae.decode(c) - part).pow(2).sum().item()
        penalty += sae.sparsity_penalty(c).item() * part.shape[0]
        nonzero = c > 0
        active += int(nonzero.sum())
        fired |= nonzero.any(dim=0)
    total_var = (x.double() - x.double().mean(dim=0)).pow(2).sum().item()
    n = x.shape[0]
    return Evaluation(
        l0=active / n,
        fvu=err_sq / max(total_var, 1e-12),
        mse=err_sq / n,
        dead_fraction=1.0 - fired.double().mean().item(),
        dead=~fired.cpu(),
        sparsity_penalty=penalty / n,
    )


@dataclass
class SizedDictionary:
    """One dictionary of a size sweep at a fixed sparsity."""

    dict_size: int
    decoder: torch.Tensor
    dead: torch.Tensor


def stable_feature_count(
    smaller: SizedDictionary, larger: SizedDictionary, threshold: float, merge_threshold: float | None = None
) -> int:
    """Distinct alive atoms of ``smaller`` that reappear (cosine >= threshold) among ``larger``'s alive atoms.

    Atoms closer than ``merge_threshold`` (default: ``threshold``) count once.
    """
    alive_small = smaller.decoder[~smaller.dead]
    alive_large = larger.decoder[~larger.dead]
    if alive_small.shape[0] == 0 or alive_large.shape[0] == 0:
        return 0
    stable = alive_small[max_cosines(alive_small, alive_large) >= threshold]
    return distinct_count(stable, threshold if merge_threshold is None else merge_threshold)


FEATURE_COUNT_METHOD = (
    "stable atoms: for each pair of consecutive dictionary sizes at one sparsity, the number of distinct "
    "alive atoms of the smaller that reappear in the larger at cosine >= 0.9 (dead latents excluded, "
    "near-duplicates merged); the estimate is the largest such count along the sweep, taken at the sparsity "
    "whose MMCS-with-larger curve is highest; low/high ask for cosine 0.95/0.8 to count an atom as "
    "reappearing (near-duplicates are merged at 0.9 throughout)"
)


def mmcs_with_larger_records(sweep: list[SizedDictionary], labels: dict) -> list[dict]:
    """One record per consecutive pair of a size sweep: ``labels`` plus sizes and their MMCS-with-larger."""
    ordered = sorted(sweep, key=lambda d: d.dict_size)
    return [
        {
            **labels,
            "dict_size": small.dict_size,
            "larger_size": large.dict_size,
            "mmcs_with_larger": mmcs_with_larger(small.decoder, large.decoder),
        }
        for small, large in pairwise(ordered)
    ]


def feature_count_curve(
    sweep: list[SizedDictionary], threshold: float = RECOVERED_COSINE, merge_threshold: float = DUPLICATE_COSINE
) -> list[int]:
    """Stable-atom counts for each consecutive pair of a size sweep (sorted by size)."""
    return [stable_feature_count(a, b, threshold, merge_threshold) for a, b in pairwise(sweep)]


def feature_count_estimate(sweeps: dict[str, list[SizedDictionary]]) -> dict:
    """Estimate the number of features from size sweeps, one per sparsity setting.

    Features that a data set really has are found again by every dictionary large enough to hold them,
    while leftover capacity goes to dead latents, duplicates or unstable directions that do not recur.
    So the count of atoms stable across consecutive sizes rises with size until it reaches the number of
    features and then stays there.
    """
    usable = {key: sorted(s, key=lambda d: d.dict_size) for key, s in sweeps.items() if len(s) >= 2}
    if not usable:
        return {"value": None, "low": None, "high": None, "method": "needs at least two dictionary sizes"}

    def agreement(sweep: list[SizedDictionary]) -> float:
        return float(np.mean([mmcs_with_larger(a.decoder, b.decoder) for a, b in pairwise(sweep)]))

    key = max(usable, key=lambda k: agreement(usable[k]))
    sweep = usable[key]
    curve = feature_count_curve(sweep, RECOVERED_COSINE)
    value = max(curve)
    low = max(feature_count_curve(sweep, 0.95))
    high = max(feature_count_curve(sweep, 0.8))
    return {
        "value": value,
        "low": min(low, value),  # greedy merging keeps counts from being strictly monotone in the threshold
        "high": max(high, value),
        "method": FEATURE_COUNT_METHOD,
        "sparsity": key,
        "curve": {f"{a.dict_size}-{b.dict_size}": count for (a, b), count in zip(pairwise(sweep), curve, strict=True)},
        # Still rising at the grid's largest pair: the count has not levelled off, so it is a lower bound.
        "peak_at_largest_pair": curve.index(value) == len(curve) - 1,
        "from_dead_fraction": [alive_count_estimate(name, sweep) for name, sweep in usable.items()],
    }


SATURATED_DEAD_FRACTION = 0.5


def alive_count_estimate(name: str, sweep: list[SizedDictionary]) -> dict:
    """The dead-fraction view of a size sweep: alive latents per size, read where the dictionary saturates.

    Once a dictionary has more latents than the data has features, the extra ones die or never fire, so
    the alive count stops growing with size. ``value`` is the alive count at the first size where at least
    half the latents are dead (None if no size of the sweep gets there).
    """
    alive = {d.dict_size: int((~d.dead).sum()) for d in sorted(sweep, key=lambda d: d.dict_size)}
    saturated = [n for n, a in alive.items() if 1 - a / n >= SATURATED_DEAD_FRACTION]
    first = saturated[0] if saturated else None
    return {
        "sweep": name,
        "alive": {str(n): a for n, a in alive.items()},
        "saturated_at": first,
        "value": alive[first] if first is not None else None,
    }
