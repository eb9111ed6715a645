"""Penalised decoder norms (Anthropic's April 2024 update): free atoms, L1 weighted by atom norm, L1 warm-up."""

from __future__ import annotations

import pytest
import torch

from tests.builders import sae_config
from tests.saes.test_sae_family import assert_grads_match_autograd
from training.saes import SAEConfig, build_sae, load_sae
from training.sweeps.trainer import INIT_STEP, SweepRun

APRIL = {"decoder_norm": "penalised", "atom_norm_init": 0.1, "init": "random", "encoder_scale": 1.0, "resample": False}


def trained_run(small_toy, steps: int = 30, **overrides) -> SweepRun:
    run = SweepRun(sae_config("relu", l1=0.2, dead_after=10**9, **{**APRIL, **overrides}))
    run.sae.initialise_from_data(small_toy.batch(INIT_STEP, 2048))
    for step in range(steps):
        run.step(small_toy.batch(step, 128), step, 100, 3e-3, want_stats=False)
    return run


@pytest.mark.parametrize("sparse_below", [0.0, 1.0], ids=["dense", "sparse"])
def test_each_gradient_path_matches_autograd_with_atoms_off_the_unit_sphere(sparse_below, small_toy):
    run = trained_run(small_toy)
    sae = run.sae
    norms = sae.W_dec.norm(dim=1)
    assert (norms - 1).abs().min() > 0.3, "the check needs atoms far from unit norm"
    assert norms.std() > 1e-3, "and atoms of different norms"
    sae.sparse_below = sparse_below
    assert_grads_match_autograd(sae, small_toy.batch(200, 128))


def test_step_stats_report_the_weighted_objective(small_toy):
    sae = trained_run(small_toy).sae
    x = small_toy.batch(300, 256)
    stats = sae.compute_grads(x, want_stats=True)
    assert stats.loss == pytest.approx(sae.reference_loss(sae.params(), x).item(), rel=1e-4)
    codes = sae.encode(x)
    weighted = 0.2 * (codes * sae.W_dec.norm(dim=1)).sum(dim=1).mean().item()
    assert stats.sparsity == pytest.approx(weighted, rel=1e-4)
    assert sae.sparsity_penalty(codes).item() == pytest.approx(weighted, rel=1e-4)


def test_training_moves_atom_norms_and_the_trainer_leaves_them_free(small_toy):
    run = trained_run(small_toy, steps=60)
    norms = run.sae.W_dec.norm(dim=1)
    assert not torch.allclose(norms, torch.full_like(norms, 0.1), atol=1e-3)
    assert not torch.allclose(norms, torch.ones_like(norms), atol=1e-3)


def test_saved_sae_has_unit_atoms_and_the_same_function_and_objective(small_toy, tmp_path):
    """Readers get unit atoms (cosines and MMCS assume them); codes scale, reconstructions and objective don't."""
    sae = trained_run(small_toy).sae
    sae.save(tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    torch.testing.assert_close(loaded.W_dec.norm(dim=1), torch.ones(sae.config.dict_size))
    x = small_toy.batch(400, 512)
    torch.testing.assert_close(loaded.reconstruct(x), sae.reconstruct(x), rtol=1e-4, atol=1e-5)
    assert loaded.sparsity_penalty(loaded.encode(x)).item() == pytest.approx(
        sae.sparsity_penalty(sae.encode(x)).item(), rel=1e-5
    )
    assert torch.equal(loaded.encode(x) > 0, sae.encode(x) > 0)
    assert sae.W_dec.norm(dim=1).sub(1).abs().max() > 0.1, "saving must not change the live SAE"


def test_l1_warms_up_linearly_over_its_fraction_of_the_horizon():
    sae = build_sae(SAEConfig(d_in=8, dict_size=16, l1=0.4, l1_warmup=0.1))
    assert sae.l1_now == 0.4  # outside training, the full coefficient
    sae.set_progress(0, 100)
    assert sae.l1_now == pytest.approx(0.04)
    sae.set_progress(4, 100)
    assert sae.l1_now == pytest.approx(0.2)
    sae.set_progress(9, 100)
    assert sae.l1_now == pytest.approx(0.4)
    sae.set_progress(60, 100)
    assert sae.l1_now == pytest.approx(0.4)
    assert build_sae(SAEConfig(d_in=8, dict_size=16, l1=0.4)).l1_now == 0.4


def test_gradients_are_clipped_to_the_global_norm(small_toy):
    sae = build_sae(sae_config("relu", l1=0.2, grad_clip=0.01))
    sae.initialise_from_data(small_toy.batch(INIT_STEP, 2048))
    sae.compute_grads(small_toy.batch(0, 128), want_stats=False)
    before = torch.sqrt(sum(g.pow(2).sum() for g in sae.grads.values())).item()
    assert before > 0.01
    direction = {name: g / before for name, g in sae.grads.items()}
    sae.clip_grads()
    assert torch.sqrt(sum(g.pow(2).sum() for g in sae.grads.values())).item() == pytest.approx(0.01, rel=1e-5)
    for name, g in sae.grads.items():
        torch.testing.assert_close(g / 0.01, direction[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arch", ["topk", "jumprelu", "tied"])
def test_penalised_atoms_are_only_for_untied_relu(arch):
    with pytest.raises(ValueError, match="penalised"):
        build_sae(sae_config(arch, decoder_norm="penalised"))
