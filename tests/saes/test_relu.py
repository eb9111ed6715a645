"""The ReLU family's two gradient paths: dense products early, firing pairs only once codes are sparse."""

from __future__ import annotations

import pytest
import torch

from tests.builders import sae_config
from tests.saes.test_sae_family import assert_grads_match_autograd
from training.saes import build_sae
from training.sweeps.trainer import INIT_STEP, SweepRun


@pytest.mark.parametrize("arch", ["relu", "tied"])
@pytest.mark.parametrize("sparse_below", [0.0, 1.0], ids=["dense", "sparse"])
def test_each_gradient_path_matches_autograd(arch, sparse_below, small_toy):
    sae = build_sae(sae_config(arch))
    sae.sparse_below = sparse_below
    sae.initialise_from_data(small_toy.batch(INIT_STEP, 2048))
    assert_grads_match_autograd(sae, small_toy.batch(0, 128))


@pytest.mark.parametrize("arch", ["relu", "tied"])
def test_both_paths_train_to_the_same_weights_and_stats(arch, small_toy):
    """The path is an implementation detail: 40 steps either way give the same SAE and the same log."""
    runs = []
    for sparse_below in (0.0, 1.0):
        run = SweepRun(sae_config(arch, dead_after=4096))
        run.sae.sparse_below = sparse_below
        run.sae.initialise_from_data(small_toy.batch(INIT_STEP, 2048))
        stats = [run.step(small_toy.batch(step, 128), step, 40, 3e-3, want_stats=True) for step in range(40)]
        runs.append((run, stats))
    (dense, dense_stats), (sparse, sparse_stats) = runs
    for name, value in dense.sae.params().items():
        torch.testing.assert_close(sparse.sae.params()[name], value, rtol=1e-4, atol=1e-5, msg=name)
    assert torch.equal(dense.sae.samples_since_fired, sparse.sae.samples_since_fired)
    for a, b in zip(dense_stats, sparse_stats, strict=True):
        assert a.l0 == b.l0
        assert a.loss == pytest.approx(b.loss, rel=1e-4)


def test_a_trained_dictionary_takes_the_sparse_path(small_toy):
    sae = build_sae(sae_config("relu", l1=0.5))
    sae.initialise_from_data(small_toy.batch(INIT_STEP, 2048))
    x = small_toy.batch(0, 128)
    c = sae.encode(x)
    assert (c > 0).float().mean() > sae.sparse_below  # data-initialised: many latents fire at first
    calls = []
    original = sae._sparse_grads
    sae._sparse_grads = lambda *args: calls.append(1) or original(*args)
    sae.compute_grads(x, want_stats=False)
    assert not calls
    sae.b_enc.fill_(-10.0)
    sae.b_enc[0] = 10.0  # one latent of 32 fires: 3% of the pairs
    sae.compute_grads(x, want_stats=False)
    assert calls
