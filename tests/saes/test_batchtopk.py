"""BatchTopK SAE: k x batch latents per training batch, and a batch-independent threshold at inference."""

from __future__ import annotations

import pytest
import torch

from tests.builders import sae_config
from training.saes import build_sae
from training.saes.batchtopk import THRESHOLD_MOMENTUM
from training.sweeps.trainer import INIT_STEP, SweepRun


def test_a_training_batch_activates_exactly_k_times_batch_latents():
    sae = build_sae(sae_config("batchtopk", k=4, k_start=1.0))
    sae.b_enc.fill_(10.0)
    x = torch.randn(200, 16) * torch.linspace(0.1, 3.0, 200)[:, None]
    sae.set_progress(0, 100)
    codes = sae.select(sae.pre_activations(x), training=True)
    assert (codes.vals > 0).sum().item() == 4 * 200
    per_sample = torch.bincount(codes.rows, minlength=200)
    assert per_sample.sum().item() == 800
    assert per_sample.min() < 4 < per_sample.max()
    assert sae.compute_grads(x, want_stats=True).l0 == 4


def test_training_keeps_the_largest_pre_activations_of_the_batch():
    sae = build_sae(sae_config("batchtopk", k=3, k_start=1.0))
    sae.b_enc.fill_(10.0)
    pre = sae.pre_activations(torch.randn(50, 16))
    codes = sae.select(pre, training=True)
    kept = torch.zeros_like(pre, dtype=torch.bool)
    kept[codes.rows, codes.cols] = True
    assert torch.equal(codes.vals, pre[codes.rows, codes.cols])
    assert pre[kept].min() > pre[~kept].max()


def test_threshold_starts_at_the_smallest_selected_value_then_moves_slowly():
    sae = build_sae(sae_config("batchtopk", k=2, k_start=1.0))
    sae.b_enc.fill_(10.0)
    first = sae.pre_activations(torch.randn(64, 16))
    codes = sae.select(first, training=True)
    assert sae.threshold.item() == pytest.approx(codes.vals.min().item())
    start = sae.threshold.item()
    second = sae.pre_activations(torch.randn(64, 16)) + 1.0
    smallest = sae.select(second, training=True).vals.min().item()
    expected = THRESHOLD_MOMENTUM * start + (1 - THRESHOLD_MOMENTUM) * smallest
    assert sae.threshold.item() == pytest.approx(expected, rel=1e-6)
    third = sae.pre_activations(torch.randn(64, 16))
    sae.select(third, training=False)
    assert sae.threshold.item() == pytest.approx(expected, rel=1e-6)


@pytest.fixture(scope="module")
def trained_batchtopk(small_toy) -> SweepRun:
    run = SweepRun(sae_config("batchtopk", k=4))
    run.sae.initialise_from_data(small_toy.batch(INIT_STEP, 2048))
    for step in range(150):
        run.step(small_toy.batch(step, 256), step, 150, 3e-3, want_stats=False)
    return run


def test_inference_keeps_pre_activations_above_the_learned_threshold(trained_batchtopk, small_toy):
    sae = trained_batchtopk.sae
    threshold = sae.threshold.item()
    assert threshold > 0
    x = small_toy.evaluation_set(2048)
    pre = sae.pre_activations(x)
    expected = torch.where(pre > threshold, pre, torch.zeros_like(pre))
    assert torch.equal(sae.encode(x), expected)
    assert 1.0 < (expected > 0).sum(dim=1).double().mean().item() < 16.0


def test_inference_does_not_depend_on_the_rest_of_the_batch(trained_batchtopk, small_toy):
    sae = trained_batchtopk.sae
    x = small_toy.evaluation_set(256)
    together = sae.encode(x)
    alone = torch.cat([sae.encode(x[i : i + 1]) for i in range(0, 256, 37)])
    torch.testing.assert_close(alone, together[0:256:37], rtol=0, atol=1e-6)
    before = sae.threshold.clone()
    sae.encode(x)
    assert torch.equal(sae.threshold, before)


def test_a_sample_with_no_latent_above_threshold_decodes_to_the_bias(trained_batchtopk):
    sae = trained_batchtopk.sae
    x = torch.cat([sae.b_dec[None, :], sae.b_dec[None, :] + 0.5 * sae.W_dec[0]])
    saved = sae.threshold.clone()
    sae.threshold = torch.tensor(1e6)
    try:
        c = sae.encode(x)
        assert c.abs().sum() == 0
        torch.testing.assert_close(sae.reconstruct(x), sae.b_dec.expand(2, -1))
    finally:
        sae.threshold = saved
