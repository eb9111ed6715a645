"""Metrics: MMCS, one-to-one matching, recovery, evaluation of an SAE, and the feature-count estimate."""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.builders import orthonormal_rows, sae_config, unit_gaussian_rows
from training.analysis.metrics import (
    SizedDictionary,
    evaluate,
    feature_count_estimate,
    max_cosines,
    mmcs,
    mmcs_with_larger,
    one_to_one_cosine,
    recovered_fraction,
)
from training.saes import build_sae


def test_mmcs_is_one_for_a_permuted_copy_of_the_truth():
    truth = unit_gaussian_rows(48, 64, seed=1)
    permuted = truth[torch.randperm(48)]
    assert mmcs(permuted, truth) == pytest.approx(1.0, abs=1e-6)
    padded = torch.cat([permuted, torch.randn(80, 64)])
    assert mmcs(padded, truth) == pytest.approx(1.0, abs=1e-6)
    assert recovered_fraction(padded, truth) == 1.0


def test_mmcs_ignores_atom_scale():
    truth = unit_gaussian_rows(16, 32, seed=2)
    scaled = truth * torch.linspace(0.1, 10.0, 16)[:, None]
    assert mmcs(scaled, truth) == pytest.approx(1.0, abs=1e-6)


def test_mmcs_of_random_directions_is_low():
    truth = unit_gaussian_rows(64, 64, seed=3)
    random_dictionary = unit_gaussian_rows(64, 64, seed=4)
    score = mmcs(random_dictionary, truth)
    assert 0.1 < score < 0.5


def test_mmcs_is_the_mean_over_truth_of_the_best_cosine():
    truth = unit_gaussian_rows(20, 12, seed=5)
    decoder = torch.randn(30, 12)
    cos = (truth @ decoder.T) / decoder.norm(dim=1)[None, :]
    assert mmcs(decoder, truth) == pytest.approx(cos.max(dim=1).values.mean().item(), abs=1e-6)
    assert max_cosines(truth, decoder, chunk=7).tolist() == pytest.approx(cos.max(dim=1).values.tolist(), abs=1e-6)


def test_one_to_one_does_not_reward_an_atom_standing_in_for_two_features():
    """Each atom is the mean direction of a pair of orthonormal features: MMCS counts it twice, matching once."""
    truth = orthonormal_rows(32, 64, seed=6)
    pair_atoms = (truth[0::2] + truth[1::2]) / 2**0.5
    assert mmcs(pair_atoms, truth) == pytest.approx(2**-0.5, abs=1e-6)
    assert one_to_one_cosine(pair_atoms, truth) == pytest.approx(2**-0.5 / 2, abs=1e-6)


def test_duplicated_half_dictionary_orthonormal_truth():
    truth = orthonormal_rows(32, 64, seed=7)
    duplicated = torch.cat([truth[:16], truth[:16]])
    assert mmcs(duplicated, truth) == pytest.approx(0.5, abs=1e-6)
    assert one_to_one_cosine(duplicated, truth) == pytest.approx(0.5, abs=1e-6)
    assert one_to_one_cosine(truth[:16], truth) == pytest.approx(0.5, abs=1e-6)


def test_duplicated_half_dictionary_matches_brute_force_matching():
    """Features 3 and 4 lie near feature 0: MMCS credits both to copies of atom 0, a matching cannot."""
    base = unit_gaussian_rows(6, 8, seed=8)
    truth = base.clone()
    truth[3] = base[0] + 0.3 * base[3]
    truth[4] = base[0] + 0.3 * base[4]
    truth = truth / truth.norm(dim=1, keepdim=True)
    duplicated = torch.cat([truth[:3], truth[:3]])
    cos = (truth @ duplicated.T).double()
    best_matching = max(
        sum(cos[f, atom].item() for f, atom in enumerate(perm)) for perm in itertools.permutations(range(6))
    )
    expected_mmcs = cos.max(dim=1).values.mean().item()
    assert one_to_one_cosine(duplicated, truth) == pytest.approx(best_matching / 6, abs=1e-6)
    assert mmcs(duplicated, truth) == pytest.approx(expected_mmcs, abs=1e-6)
    assert mmcs(duplicated, truth) > 0.6
    assert one_to_one_cosine(duplicated, truth) < mmcs(duplicated, truth) - 0.05


def atoms_at_cosines(truth: torch.Tensor, cosines: list[float]) -> torch.Tensor:
    """One unit atom per truth row (truth orthonormal in the first half of the space) at the given cosine."""
    n, d = truth.shape
    perpendicular = torch.zeros(n, d)
    perpendicular[torch.arange(n), d // 2 + torch.arange(n)] = 1.0
    c = torch.tensor(cosines)[:, None]
    return c * truth + (1 - c**2).sqrt() * perpendicular


def test_recovered_fraction_counts_features_at_or_above_the_threshold():
    truth = torch.eye(8, 16)
    atoms = atoms_at_cosines(truth, [0.99, 0.95, 0.91, 0.89, 0.85, 0.7, 0.5, 0.0])
    assert max_cosines(truth, atoms).tolist() == pytest.approx([0.99, 0.95, 0.91, 0.89, 0.85, 0.7, 0.5, 0.0], abs=1e-6)
    assert recovered_fraction(atoms, truth) == pytest.approx(3 / 8)
    assert recovered_fraction(atoms, truth, threshold=0.8) == pytest.approx(5 / 8)
    assert recovered_fraction(atoms, truth, threshold=0.96) == pytest.approx(1 / 8)
    assert recovered_fraction(atoms, truth, threshold=-1.0) == 1.0


def test_mmcs_with_larger_averages_over_the_smaller_dictionary():
    truth = unit_gaussian_rows(32, 64, seed=9)
    small, large = truth[:8], truth
    assert mmcs_with_larger(small, large) == pytest.approx(1.0, abs=1e-6)
    reverse = mmcs_with_larger(large, small)
    expected = (8 + max_cosines(truth[8:], small).sum().item()) / 32
    assert reverse == pytest.approx(expected, abs=1e-6)
    assert reverse < 0.7
    orthogonal = orthonormal_rows(8, 16, seed=10)
    assert mmcs_with_larger(orthogonal[:4], orthogonal[4:]) == pytest.approx(0.0, abs=1e-6)


def exact_relu_sae(truth: torch.Tensor, bias: torch.Tensor):
    """A relu SAE whose encoder and decoder are the orthonormal truth and whose decoder bias is ``bias``."""
    n, d = truth.shape
    sae = build_sae(sae_config("relu", d_in=d, dict_size=n, l1=0.1))
    sae.W_enc.copy_(truth)
    sae.W_dec.copy_(truth)
    sae.b_enc.zero_()
    sae.b_dec.copy_(bias)
    return sae


def test_evaluate_exact_reconstruction_gives_zero_fvu_and_known_l0_and_dead():
    """A signed permutation as truth and dyadic values keep every product exact, so zeros stay zeros."""
    truth = torch.zeros(12, 16)
    truth[torch.arange(12), torch.randperm(16)[:12]] = torch.where(torch.rand(12) < 0.5, -1.0, 1.0)
    bias = torch.arange(16) / 4 - 2
    coefficients = torch.randint(1, 9, (1000, 12)) / 8 * (torch.rand(1000, 12) < 0.3)
    coefficients[:, 9:] = 0.0
    x = coefficients @ truth + bias
    sae = exact_relu_sae(truth, bias)
    result = evaluate(sae, x, chunk=128)
    assert result.fvu == pytest.approx(0.0, abs=1e-8)
    assert result.mse == pytest.approx(0.0, abs=1e-8)
    assert result.l0 == pytest.approx((coefficients > 0).sum().item() / 1000, abs=1e-9)
    assert result.dead.tolist() == [False] * 9 + [True] * 3
    assert result.dead_fraction == pytest.approx(3 / 12)


def test_evaluate_fvu_is_one_when_reconstruction_is_the_mean():
    truth = orthonormal_rows(8, 8, seed=12)
    x = torch.rand(500, 8) @ truth
    sae = exact_relu_sae(truth, x.mean(dim=0))
    sae.W_dec.zero_()
    result = evaluate(sae, x)
    assert result.fvu == pytest.approx(1.0, abs=1e-5)
    half = exact_relu_sae(truth, torch.zeros(8))
    half.W_dec.mul_(0.5)
    centred = x - x.mean(dim=0)
    expected = (0.5 * x).pow(2).sum().item() / centred.pow(2).sum().item()
    assert evaluate(half, x).fvu == pytest.approx(expected, rel=1e-5)


def test_evaluate_does_not_depend_on_chunking():
    truth = orthonormal_rows(8, 16, seed=13)
    x = torch.randn(777, 16)
    sae = exact_relu_sae(truth, torch.zeros(16))
    whole, pieces = evaluate(sae, x, chunk=8192), evaluate(sae, x, chunk=100)
    assert whole.l0 == pieces.l0
    assert whole.fvu == pytest.approx(pieces.fvu, rel=1e-6)
    assert torch.equal(whole.dead, pieces.dead)


G = 32
D = 64


def noisy_copy(truth: torch.Tensor, seed: int, noise: float = 0.03) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    atoms = truth + noise * torch.randn(truth.shape, generator=gen)
    return atoms / atoms.norm(dim=1, keepdim=True)


def synthetic_sweep(truth: torch.Tensor, sizes: list[int], junk_dead: bool, seed: int) -> list[SizedDictionary]:
    """Dictionaries holding (noisy copies of) min(size, G) true features plus random junk atoms."""
    sweep = []
    for i, size in enumerate(sizes):
        n_true = min(size, truth.shape[0])
        true_atoms = noisy_copy(truth[torch.randperm(truth.shape[0])[:n_true]], seed=seed + i)
        junk = unit_gaussian_rows(size - n_true, truth.shape[1], seed=seed + 100 + i)
        decoder = torch.cat([true_atoms, junk])
        dead = torch.cat([torch.zeros(n_true, dtype=torch.bool), torch.full((size - n_true,), junk_dead)])
        order = torch.randperm(size)
        sweep.append(SizedDictionary(dict_size=size, decoder=decoder[order], dead=dead[order]))
    return sweep


@pytest.mark.parametrize("junk_dead", [True, False], ids=["junk-dead", "junk-alive"])
def test_feature_count_estimate_finds_the_number_of_true_features(junk_dead):
    truth = unit_gaussian_rows(G, D, seed=14)
    sweep = synthetic_sweep(truth, [16, 32, 64, 128], junk_dead=junk_dead, seed=15)
    estimate = feature_count_estimate({"l1=0.1": sweep})
    assert estimate["value"] == G
    assert estimate["low"] <= estimate["value"] <= estimate["high"]
    assert estimate["high"] == G
    assert estimate["sparsity"] == "l1=0.1"
    assert isinstance(estimate["method"], str) and estimate["method"]


def test_feature_count_estimate_says_when_it_is_still_rising_at_the_largest_sizes():
    """A grid too small for the data gives a count that has not levelled off: a lower bound, and said so."""
    truth = unit_gaussian_rows(G, D, seed=14)
    levelled = feature_count_estimate({"l1=0.1": synthetic_sweep(truth, [16, 32, 64, 128], junk_dead=True, seed=15)})
    assert levelled["curve"] == {"16-32": 16, "32-64": G, "64-128": G}
    assert levelled["peak_at_largest_pair"] is False
    nested = [
        SizedDictionary(size, noisy_copy(truth[:size], seed=size), torch.zeros(size, dtype=torch.bool))
        for size in (4, 8, 16)
    ]
    rising = feature_count_estimate({"l1=0.1": nested})
    assert rising["curve"] == {"4-8": 4, "8-16": 8}
    assert rising["value"] == 8 and rising["peak_at_largest_pair"] is True


def test_feature_count_estimate_excludes_dead_atoms_and_merges_duplicates():
    """Junk repeated in every dictionary is stable; marked dead it must not count, and duplicates count once."""
    truth = unit_gaussian_rows(G, D, seed=16)
    junk = unit_gaussian_rows(16, D, seed=17)
    sweep = []
    for size in (64, 96):
        extra = size - G - 16
        decoder = torch.cat([truth, truth[: extra // 2], truth[: extra - extra // 2], junk])
        dead = torch.cat([torch.zeros(size - 16, dtype=torch.bool), torch.ones(16, dtype=torch.bool)])
        sweep.append(SizedDictionary(dict_size=size, decoder=decoder, dead=dead))
    assert feature_count_estimate({"k=4": sweep})["value"] == G
    alive = [SizedDictionary(s.dict_size, s.decoder, torch.zeros_like(s.dead)) for s in sweep]
    assert feature_count_estimate({"k=4": alive})["value"] == G + 16


def test_feature_count_estimate_uses_the_sparsity_whose_sizes_agree_most():
    truth = unit_gaussian_rows(G, D, seed=18)
    good = synthetic_sweep(truth, [16, 32, 64, 128], junk_dead=False, seed=19)
    noise = [
        SizedDictionary(size, unit_gaussian_rows(size, D, seed=200 + size), torch.zeros(size, dtype=torch.bool))
        for size in (16, 32, 64, 128)
    ]
    estimate = feature_count_estimate({"l1=1": noise, "l1=0.1": good})
    assert estimate["sparsity"] == "l1=0.1"
    assert estimate["value"] == G
    assert feature_count_estimate({"l1=1": noise})["value"] == 0


def test_feature_count_estimate_needs_two_sizes():
    truth = unit_gaussian_rows(G, D, seed=20)
    single = synthetic_sweep(truth, [64], junk_dead=False, seed=21)
    estimate = feature_count_estimate({"l1=0.1": single})
    assert estimate["value"] is None and estimate["low"] is None and estimate["high"] is None


def test_dead_fraction_view_reads_the_alive_count_where_the_sweep_saturates():
    truth = unit_gaussian_rows(G, D, seed=14)
    sweep = synthetic_sweep(truth, [16, 32, 64, 128], junk_dead=True, seed=15)
    estimate = feature_count_estimate({"l1=0.1": sweep})
    (view,) = estimate["from_dead_fraction"]
    assert view["alive"] == {"16": 16, "32": 32, "64": 32, "128": 32}
    assert view["saturated_at"] == 64 and view["value"] == G  # 64 latents, half of them dead
    alive = synthetic_sweep(truth, [16, 32, 64], junk_dead=False, seed=15)
    (never,) = feature_count_estimate({"l1=0.1": alive})["from_dead_fraction"]
    assert never["saturated_at"] is None and never["value"] is None
