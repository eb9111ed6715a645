"""Resampling of dead latents for the L1 family."""

from __future__ import annotations

import torch

from tests.builders import sae_config
from training.saes import build_sae
from training.saes.resampling import resample_dead_latents
from training.sweeps.trainer import INIT_STEP, SweepRun

DEAD_AFTER = 1024
BATCH = 256
CHECK_STEP = DEAD_AFTER // BATCH - 1


def sae_with_dead_latents(small_toy, arch: str = "relu", **overrides):
    sae = build_sae(sae_config(arch, **{"dead_after": DEAD_AFTER, "resample": True, **overrides}))
    sae.initialise_from_data(small_toy.batch(INIT_STEP, 2048))
    sae.samples_since_fired[[2, 5, 11]] = DEAD_AFTER
    return sae


def test_dead_latents_point_at_badly_explained_inputs(small_toy):
    sae = sae_with_dead_latents(small_toy)
    alive_before = {name: p[[0, 1, 3]].clone() for name, p in sae.params().items() if name != "b_dec"}
    x = small_toy.batch(0, BATCH)
    residual = x - sae.reconstruct(x)
    directions = residual / residual.norm(dim=1, keepdim=True)
    reset = resample_dead_latents(sae, x, CHECK_STEP, total_steps=100)
    assert len(reset) == 1 and reset[0].tolist() == [2, 5, 11]
    cos = (sae.W_dec[[2, 5, 11]] @ directions.T).max(dim=1).values
    torch.testing.assert_close(cos, torch.ones(3), rtol=0, atol=1e-5)
    assert sae.b_enc[[2, 5, 11]].abs().sum() == 0
    assert sae.samples_since_fired.max() < DEAD_AFTER
    enc_dirs = sae.W_enc[[2, 5, 11]] / sae.W_enc[[2, 5, 11]].norm(dim=1, keepdim=True)
    torch.testing.assert_close(enc_dirs, sae.W_dec[[2, 5, 11]], rtol=0, atol=1e-5)
    for name, rows in alive_before.items():
        torch.testing.assert_close(sae.params()[name][[0, 1, 3]], rows, rtol=0, atol=1e-6, msg=name)


def test_tied_resampling_keeps_the_encoder_equal_to_the_decoder(small_toy):
    sae = sae_with_dead_latents(small_toy, arch="tied")
    x = small_toy.batch(0, BATCH)
    assert resample_dead_latents(sae, x, CHECK_STEP, total_steps=100)
    assert torch.equal(sae.W_enc, sae.W_dec)


def test_no_resampling_off_schedule_late_or_when_disabled(small_toy):
    x = small_toy.batch(0, BATCH)
    off_interval = sae_with_dead_latents(small_toy)
    assert resample_dead_latents(off_interval, x, CHECK_STEP + 1, total_steps=100) == []
    late = sae_with_dead_latents(small_toy, resample_until=0.5)
    interval = CHECK_STEP + 1
    assert resample_dead_latents(late, x, 6 * interval - 1, total_steps=40) == []
    assert resample_dead_latents(late, x, 5 * interval - 1, total_steps=40)
    disabled = sae_with_dead_latents(small_toy, resample=False)
    before = disabled.W_dec.clone()
    assert resample_dead_latents(disabled, x, CHECK_STEP, total_steps=100) == []
    assert torch.equal(disabled.W_dec, before)


def test_sweep_step_resets_optimiser_state_of_resampled_latents(small_toy):
    run = SweepRun(sae_config("relu", dead_after=DEAD_AFTER, resample=True))
    run.sae.initialise_from_data(small_toy.batch(INIT_STEP, 2048))
    for step in range(CHECK_STEP):
        run.step(small_toy.batch(step, BATCH), step, 100, 1e-3, want_stats=False)
    run.sae.samples_since_fired[[4, 7]] = DEAD_AFTER
    run.sae.b_enc[[4, 7]] = -100.0
    run.step(small_toy.batch(CHECK_STEP, BATCH), CHECK_STEP, 100, 1e-3, want_stats=False)
    for name in ("W_enc", "W_dec", "b_enc"):
        assert run.adam.m[name][[4, 7]].abs().sum() == 0, name
        assert run.adam.v[name][[4, 7]].abs().sum() == 0, name
        assert run.adam.v[name][[0, 1]].abs().sum() > 0, name
