"""The toy generator: sparsity, the decay law, correlation, determinism and the ground-truth features."""

from __future__ import annotations

import math

import pytest
import torch

from training.data.toy import ToyConfig, ToyData

SAMPLES_PER_STEP = 20_000
STEPS = 3


@pytest.fixture(scope="module")
def toys() -> dict[tuple[int, float, float, bool], ToyData]:
    """Toys keyed by (G, mean_active, decay, correlated), built once for the module."""
    keys = [
        (64, 5.0, 0.99, True),
        (64, 5.0, 0.99, False),
        (128, 3.0, 0.99, True),
        (128, 3.0, 0.99, False),
        (64, 3.0, 0.97, False),
    ]
    return {
        key: ToyData(ToyConfig(dim=32, n_features=key[0], mean_active=key[1], decay=key[2], correlated=key[3], seed=5))
        for key in keys
    }


def active_mask(toy: ToyData) -> torch.Tensor:
    """Which features are active in the first few training batches (60k samples)."""
    return torch.cat([toy.coefficients(step, SAMPLES_PER_STEP) > 0 for step in range(STEPS)])


@pytest.mark.parametrize(
    "key",
    [(64, 5.0, 0.99, True), (64, 5.0, 0.99, False), (128, 3.0, 0.99, True), (128, 3.0, 0.99, False)],
    ids=["G64-A5-correlated", "G64-A5-independent", "G128-A3-correlated", "G128-A3-independent"],
)
def test_mean_active_count_hits_the_target(toys, key):
    active = active_mask(toys[key])
    mean_active = active.sum(dim=1).double().mean().item()
    assert mean_active == pytest.approx(key[1], rel=0.05)


@pytest.mark.parametrize("key", [(128, 3.0, 0.99, True), (64, 5.0, 0.99, False)], ids=["correlated", "independent"])
def test_no_sample_is_empty(toys, key):
    active = active_mask(toys[key])
    assert active.any(dim=1).all()


@pytest.mark.parametrize(
    "key", [(64, 5.0, 0.99, True), (64, 3.0, 0.97, False)], ids=["decay0.99-correlated", "decay0.97-independent"]
)
def test_feature_frequencies_follow_the_decay_law(toys, key):
    n_features, _, decay, _ = key
    freq = active_mask(toys[key]).double().mean(dim=0)
    index = torch.arange(n_features, dtype=torch.float64)
    design = torch.stack([index, torch.ones_like(index)], dim=1)
    slope = torch.linalg.lstsq(design, freq.log()[:, None]).solution[0].item()
    assert slope == pytest.approx(math.log(decay), rel=0.1)
    quarter = n_features // 4
    law = decay**index
    expected_ratio = (law[:quarter].mean() / law[-quarter:].mean()).item()
    assert (freq[:quarter].mean() / freq[-quarter:].mean()).item() == pytest.approx(expected_ratio, rel=0.05)


@pytest.mark.parametrize(
    "key",
    [(64, 5.0, 0.99, True), (128, 3.0, 0.99, True), (128, 3.0, 0.99, False)],
    ids=["G64-correlated", "G128-correlated", "G128-independent"],
)
def test_marginals_are_the_probabilities_plus_the_empty_sample_fixup(toys, key):
    """Each feature fires with its probability p_i, plus its share p_i/sum(p) of the empty-sample fix-up.

    The fix-up adds mean_active - sum(p) features per sample, so the realised rate is p_i * A / sum(p).
    """
    toy = toys[key]
    freq = active_mask(toy).double().mean(dim=0)
    probs = toy.probabilities.double()
    assert probs.sum().item() <= key[1]
    expected = probs * key[1] / probs.sum()
    frequent = probs > 0.02
    assert frequent.sum() >= 16
    rel_err = ((freq - expected) / expected)[frequent].abs()
    assert rel_err.max().item() < 0.08
    assert rel_err.mean().item() < 0.03
    assert ((freq - probs) / probs)[frequent].mean().abs().item() < 0.1


def co_occurrence_ratio(active: torch.Tensor) -> torch.Tensor:
    """P(i and j) / (P(i) P(j)) over pairs of distinct frequent features (1 means independent)."""
    a = active.double()
    freq = a.mean(dim=0)
    frequent = freq > 0.03
    a, freq = a[:, frequent], freq[frequent]
    joint = a.T @ a / a.shape[0]
    ratio = joint / (freq[:, None] * freq[None, :])
    off_diagonal = ~torch.eye(ratio.shape[0], dtype=torch.bool)
    return ratio[off_diagonal]


def test_correlated_mode_couples_co_activation(toys):
    correlated = co_occurrence_ratio(active_mask(toys[(64, 5.0, 0.99, True)]))
    independent = co_occurrence_ratio(active_mask(toys[(64, 5.0, 0.99, False)]))
    assert correlated.numel() > 100
    assert independent.mean().item() == pytest.approx(1.0, abs=0.05)
    assert correlated.mean().item() > 1.25
    assert (correlated > 1.5).double().mean().item() > 0.25
    assert (independent > 1.5).double().mean().item() < 0.01


def test_correlation_is_drawn_per_sample_not_per_batch(toys):
    """Features of neighbouring samples co-occur independently; only features within a sample are coupled."""
    active = active_mask(toys[(64, 5.0, 0.99, True)]).double()
    current, following = active[:-1], active[1:]
    freq = active.mean(dim=0)
    frequent = freq > 0.03
    joint = (current[:, frequent].T @ following[:, frequent]) / current.shape[0]
    across = joint / (freq[frequent][:, None] * freq[frequent][None, :])
    assert across.mean().item() == pytest.approx(1.0, abs=0.05)


def test_active_magnitudes_are_uniform_on_unit_interval(toys):
    coefs = toys[(64, 5.0, 0.99, False)].coefficients(0, SAMPLES_PER_STEP)
    values = coefs[coefs > 0]
    assert values.max().item() < 1.0
    assert values.mean().item() == pytest.approx(0.5, abs=0.01)
    assert (values < 0.25).double().mean().item() == pytest.approx(0.25, abs=0.01)


def test_features_are_unit_norm_with_the_configured_shape(toys):
    features = toys[(128, 3.0, 0.99, True)].features
    assert features.shape == (128, 32)
    assert torch.allclose(features.norm(dim=1), torch.ones(128), atol=1e-6)


def test_batch_is_coefficients_times_features(toys):
    toy = toys[(64, 5.0, 0.99, True)]
    assert torch.allclose(toy.batch(4, 64), toy.coefficients(4, 64) @ toy.features, atol=1e-6)
    assert toy.dim == 32


def test_same_seed_same_data_and_steps_differ():
    config = ToyConfig(dim=16, n_features=32, seed=11)
    first, second = ToyData(config), ToyData(config)
    assert torch.equal(first.features, second.features)
    assert torch.equal(first.batch(7, 128), second.batch(7, 128))
    assert torch.equal(first.evaluation_set(256), second.evaluation_set(256))
    assert not torch.equal(first.batch(7, 128), first.batch(8, 128))
    assert not torch.equal(first.evaluation_set(128), first.batch(0, 128))
    other = ToyData(ToyConfig(dim=16, n_features=32, seed=12))
    assert not torch.equal(first.features, other.features)
    assert not torch.equal(first.batch(7, 128), other.batch(7, 128))


def test_batches_do_not_depend_on_what_was_drawn_before():
    toy = ToyData(ToyConfig(dim=16, n_features=32, correlated=False, seed=2))
    fresh = toy.batch(5, 64)
    for step in range(5):
        toy.batch(step, 64)
    assert torch.equal(toy.batch(5, 64), fresh)


def test_more_active_features_than_features_is_rejected():
    with pytest.raises(ValueError, match="exceeds the number of features"):
        ToyData(ToyConfig(dim=8, n_features=4, mean_active=5.0, correlated=False))


@pytest.mark.parametrize("field", [{"decay": 1.5}, {"dim": 0}, {"mean_active": 0.0}])
def test_invalid_settings_are_rejected(field):
    with pytest.raises(ValueError):
        ToyConfig(**field)
