"""JumpReLU SAE: per-latent thresholds at inference and in the L0 count."""

from __future__ import annotations

import math

import pytest
import torch

from tests.builders import sae_config
from training.saes import build_sae


def test_encode_zeroes_pre_activations_at_or_below_each_latents_threshold():
    sae = build_sae(sae_config("jumprelu", dict_size=32))
    thresholds = torch.linspace(0.05, 2.0, 32)
    sae.log_threshold.copy_(thresholds.log())
    x = torch.randn(400, 16)
    pre = sae.pre_activations(x)
    c = sae.encode(x)
    active = pre > sae.log_threshold.exp()
    assert torch.equal(c, pre * active)
    rates = active.double().mean(dim=0)
    assert rates[:8].mean() > rates[-8:].mean()


def test_initial_threshold_is_the_configured_one():
    sae = build_sae(sae_config("jumprelu", jump_threshold=0.3))
    torch.testing.assert_close(sae.log_threshold.exp(), torch.full((32,), 0.3))
    assert "log_threshold" in sae.params()


def test_stats_count_latents_above_threshold_and_charge_l1_per_latent():
    sae = build_sae(sae_config("jumprelu", l1=0.2))
    x = torch.randn(128, 16)
    active = (sae.pre_activations(x) > sae.log_threshold.exp()).sum().item() / 128
    stats = sae.compute_grads(x, want_stats=True)
    assert stats.l0 == pytest.approx(active)
    assert stats.sparsity == pytest.approx(0.2 * active)


def test_threshold_gradient_comes_only_from_pre_activations_near_the_threshold():
    sae = build_sae(sae_config("jumprelu", jump_bandwidth=0.05, jump_threshold=math.exp(0.0)))
    sae.b_enc.fill_(-100.0)
    sae.b_enc[0] = 1.0
    x = torch.randn(256, 16)
    sae.compute_grads(x, want_stats=False)
    assert sae.grads["log_threshold"][1:].abs().sum() == 0
    assert sae.grads["log_threshold"][0] != 0
