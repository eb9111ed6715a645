"""Distinct features: a dictionary's atoms merged into groups of near-duplicates.

A dictionary often holds several copies of one direction (the sentence-end period dozens of times), so
counting its latents overcounts its features. The stable-atom feature count and the labelling population
both merge atoms whose decoder cosine reaches ``DUPLICATE_COSINE`` with this one greedy rule.
"""

from __future__ import annotations

import torch

# The merge threshold of the stable-atom count, shared by the labelling population.
DUPLICATE_COSINE = 0.9
_BLOCK = 1024


def _unit_rows(atoms: torch.Tensor) -> torch.Tensor:
    atoms = atoms.double()
    return atoms / atoms.norm(dim=1, keepdim=True).clamp_min(1e-12)


def near_duplicate_groups(atoms: torch.Tensor, threshold: float = DUPLICATE_COSINE) -> torch.Tensor:
    """For each row of ``atoms``, the row of its group's representative (a representative points at itself).

    Greedy in row order: a row becomes a representative unless an earlier representative has cosine >=
    ``threshold`` with it; every other row joins the representative it is closest to. So the number of
    groups is the number of atoms left after merging near-duplicates, and in index order the
    representative is the group's lowest row.
    """
    unit = _unit_rows(atoms)
    n = unit.shape[0]
    kept = torch.zeros(0, dtype=torch.long)
    for start in range(0, n, _BLOCK):
        block = unit[start : start + _BLOCK]
        fresh = torch.ones(block.shape[0], dtype=torch.bool)
        if kept.numel():
            fresh = (block @ unit[kept].T).max(dim=1).values < threshold
        candidates = fresh.nonzero().flatten()
        cos = block[candidates] @ block[candidates].T
        chosen: list[int] = []
        for i in range(candidates.numel()):
            if not chosen or cos[i, chosen].max().item() < threshold:
                chosen.append(i)
        kept = torch.cat([kept, candidates[chosen] + start])
    representative = torch.empty(n, dtype=torch.long)
    for start in range(0, n, _BLOCK):
        nearest = (unit[start : start + _BLOCK] @ unit[kept].T).argmax(dim=1)
        representative[start : start + _BLOCK] = kept[nearest]
    # A representative's own cosine is 1, but a duplicate at exactly 1 must not take its place.
    representative[kept] = kept
    return representative


def distinct_count(atoms: torch.Tensor, threshold: float = DUPLICATE_COSINE) -> int:
    """The number of groups of ``near_duplicate_groups``: atoms left once near-duplicates are merged."""
    if atoms.shape[0] == 0:
        return 0
    return int(near_duplicate_groups(atoms, threshold).unique().numel())
