"""Adam over named tensors and the learning-rate schedule."""

from __future__ import annotations

import pytest
import torch

from training.sweeps.optim import Adam, learning_rate


def test_adam_matches_torch_adam():
    params = {"W_enc": torch.randn(6, 4), "b_enc": torch.randn(6)}
    reference = {name: p.clone().requires_grad_(True) for name, p in params.items()}
    ours = Adam(params)
    torch_adam = torch.optim.Adam(list(reference.values()), lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(5):
        grads = {name: torch.randn_like(p) for name, p in params.items()}
        ours.step(params, grads, lr=1e-2)
        for name, p in reference.items():
            p.grad = grads[name].clone()
        torch_adam.step()
    for name, p in params.items():
        torch.testing.assert_close(p, reference[name].detach(), rtol=1e-5, atol=1e-7)


def test_reset_latents_clears_only_those_rows_of_latent_parameters():
    params = {"W_enc": torch.zeros(5, 3), "b_enc": torch.zeros(5), "b_dec": torch.zeros(3)}
    adam = Adam(params)
    adam.step(params, {name: torch.ones_like(p) for name, p in params.items()}, lr=1e-3)
    adam.reset_latents(torch.tensor([1, 3]))
    assert adam.m["W_enc"][[1, 3]].abs().sum() == 0 and adam.v["b_enc"][[1, 3]].abs().sum() == 0
    assert (adam.m["W_enc"][[0, 2, 4]] != 0).all() and (adam.v["b_enc"][[0, 2, 4]] != 0).all()
    assert (adam.m["b_dec"] != 0).all()


def test_state_round_trip_continues_identically():
    params = {"W_dec": torch.randn(4, 3)}
    adam = Adam(params)
    grads = [{"W_dec": torch.randn(4, 3)} for _ in range(4)]
    for g in grads[:2]:
        adam.step(params, g, lr=1e-2)
    copy = {"W_dec": params["W_dec"].clone()}
    restored = Adam(copy)
    restored.load_state({k: v.clone() for k, v in adam.state().items()})
    assert restored.t == 2
    for g in grads[2:]:
        adam.step(params, g, lr=1e-2)
        restored.step(copy, g, lr=1e-2)
    assert torch.equal(params["W_dec"], copy["W_dec"])


def test_learning_rate_warms_up_holds_then_decays_to_zero():
    total, peak = 1000, 1e-3
    rates = [learning_rate(s, total, peak, warmup_fraction=0.1, decay_fraction=0.2) for s in range(total)]
    assert rates[0] == pytest.approx(peak / 100)
    assert rates[49] == pytest.approx(peak / 2)
    assert rates[99] == pytest.approx(peak)
    assert rates[100:800] == [peak] * 700
    assert rates[900] == pytest.approx(peak / 2)
    assert rates[-1] == pytest.approx(peak / 200)
    assert all(b <= a for a, b in zip(rates[800:], rates[801:], strict=False))
    assert learning_rate(0, total, peak, warmup_fraction=0.0, decay_fraction=0.0) == peak
    assert learning_rate(total - 1, total, peak, warmup_fraction=0.0, decay_fraction=0.0) == peak
