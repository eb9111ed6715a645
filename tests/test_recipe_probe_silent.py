"""scripts/recipe_probe.py counts the latents silent on held-out rows, and those negative on every row."""

from __future__ import annotations

import torch

from tests.builders import load_script, sae_config
from training.saes import build_sae

probe = load_script("recipe_probe")


def test_silent_latents_tell_negative_everywhere_from_outcompeted():
    sae = build_sae(sae_config("topk", k=1, dict_size=8))
    sae.W_enc.zero_()
    sae.b_enc.copy_(torch.tensor([3.0, 2.0, 1.0, -1.0, -2.0, 0.5, 0.5, 0.5]))
    sae.W_enc[5, 0] = 10.0  # wins the top-1 wherever x[:, 0] > 0.25
    x = torch.zeros(10_000, 16)
    x[::2, 0] = 1.0
    # latent 0 wins where latent 5 does not; 1, 2, 6 and 7 are positive but outcompeted; 3 and 4 are negative everywhere
    assert probe.silent_latents(sae, x, chunk=777) == {"silent": 6, "silent_negative_everywhere": 2}
