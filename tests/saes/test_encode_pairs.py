"""encode_pairs reads single activations without the full encoder product, where latents do not compete."""

from __future__ import annotations

import pytest
import torch

from tests.builders import sae_config
from training.saes import ARCHS, build_sae


@pytest.mark.parametrize("arch", ARCHS)
def test_encode_pairs_equals_the_full_encoding_or_declines(arch, small_toy):
    sae = build_sae(sae_config(arch))
    sae.initialise_from_data(small_toy.batch(-5, 2048))
    if arch == "batchtopk":
        sae.threshold = torch.tensor(0.05)
    x = small_toy.batch(1, 64)
    latents = torch.randint(0, sae.config.dict_size, (64,))
    pairs = sae.encode_pairs(x, latents)
    if arch == "topk":
        assert pairs is None  # a top-k latent's activation depends on every other latent
        return
    full = sae.encode(x)[torch.arange(64), latents]
    assert (full > 0).any()
    torch.testing.assert_close(pairs, full, rtol=1e-5, atol=1e-6)
