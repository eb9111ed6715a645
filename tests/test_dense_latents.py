"""scripts/dense_latents.py finds the dense latent that cancels a drifted decoder bias."""

from __future__ import annotations

import pytest
import torch

from tests.builders import load_script, sae_config
from training.saes import build_sae

check = load_script("dense_latents")


def test_a_latent_firing_on_every_row_against_the_decoder_bias_is_reported():
    sae = build_sae(sae_config("topk", k=2, dict_size=8))
    sae.W_enc.zero_()
    sae.b_enc.copy_(torch.tensor([2.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, 0.5]))
    sae.W_enc[1, 0] = 4.0  # fires where x[:, 0] > 0.25, a quarter of the rows
    sae.b_dec.copy_(-3.0 * sae.W_dec[0])  # latent 0 fires everywhere and points against the decoder bias
    x = torch.zeros(1000, 16)
    x[::4, 0] = 1.0
    found = check.bias_drift(sae, x)
    assert found["dense_latents"] == 2  # latents 0 and 7 fire on every row; latent 1 on a quarter
    assert found["top_firing_rate"] == 1.0
    assert found["positive_b_enc"] == 2
    assert found["b_dec_norm"] == pytest.approx(3.0 * sae.W_dec[0].norm().item(), rel=1e-4)
    assert found["densest_atom_cos_b_dec"] == pytest.approx(-1.0, abs=1e-4)
