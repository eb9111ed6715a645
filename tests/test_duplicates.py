"""Distinct features: near-duplicate atoms grouped by the stable-atom count's own merge."""

import torch

from training.analysis.duplicates import DUPLICATE_COSINE, distinct_count, near_duplicate_groups
from training.analysis.metrics import SizedDictionary, stable_feature_count


def _sequential_greedy(atoms: torch.Tensor, threshold: float) -> list[int]:
    """The merge written out one atom at a time: kept unless an earlier kept atom is that close."""
    unit = atoms.double() / atoms.double().norm(dim=1, keepdim=True)
    kept: list[int] = []
    for i in range(unit.shape[0]):
        if not kept or (unit[kept] @ unit[i]).max().item() < threshold:
            kept.append(i)
    return kept


def _with_copies(n_directions: int, copies: int, dim: int = 16, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(n_directions, dim, generator=gen)
    noisy = [base + 0.05 * torch.randn(base.shape, generator=gen) for _ in range(copies)]
    atoms = torch.cat([base, *noisy])
    return atoms[torch.randperm(atoms.shape[0], generator=gen)]


def test_groups_are_the_greedy_merge_across_blocks():
    atoms = _with_copies(700, 2)  # 2,100 atoms: the merge crosses its 1,024-row blocks
    groups = near_duplicate_groups(atoms)
    representatives = sorted(set(groups.tolist()))
    assert representatives == _sequential_greedy(atoms, DUPLICATE_COSINE)
    unit = atoms / atoms.norm(dim=1, keepdim=True)
    member_cos = (unit * unit[groups]).sum(dim=1)
    assert (member_cos >= DUPLICATE_COSINE - 1e-6).all()
    assert len(representatives) < atoms.shape[0]


def test_exact_copies_join_the_lowest_row():
    atom = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.01, 0.0]])
    assert near_duplicate_groups(atom).tolist() == [0, 1, 0, 0]
    assert distinct_count(atom) == 2


def test_stable_atom_count_merges_with_the_same_groups():
    atoms = _with_copies(300, 3, seed=1)
    dead = torch.zeros(atoms.shape[0], dtype=torch.bool)
    dead[::7] = True
    small = SizedDictionary(atoms.shape[0], atoms, dead)
    large = SizedDictionary(atoms.shape[0], atoms.clone(), torch.zeros_like(dead))
    alive = atoms[~dead]
    assert stable_feature_count(small, large, DUPLICATE_COSINE) == len(set(near_duplicate_groups(alive).tolist()))
