"""Harvested activations match a fresh forward pass; ActivationSource is deterministic and holds rows out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.activations.harvest import (
    ActivationSource,
    HarvestConfig,
    harvest_activations,
    load_activations,
    module_activations,
    site_module,
)
from training.lm.tinylm import config_hash

from .text_builders import tiny_lm, tiny_tokens

N_TOKENS = 1000  # not a multiple of the context (16) or of a chunk (4 x 16): the tails are covered


def _harvest(out: Path, **config: object) -> np.ndarray:
    model = tiny_lm()
    harvest_activations(model, tiny_tokens()[:N_TOKENS], out, "train", HarvestConfig(chunk_contexts=4, **config), False)
    return load_activations(out, "train")[0]


def test_stored_activations_equal_a_fresh_forward_pass(tmp_path: Path) -> None:
    rows = _harvest(tmp_path)
    model, tokens, context = tiny_lm(), tiny_tokens()[:N_TOKENS], 16
    assert rows.shape == (N_TOKENS, 64) and rows.dtype == np.float32
    positions = [0, 15, 16, 17, 500, 767, 768, 991, 992, 999, *np.random.default_rng(0).integers(0, N_TOKENS, 20)]
    for t in positions:
        begin = t // context * context
        window = torch.from_numpy(tokens[begin : begin + context].astype(np.int64))[None]
        with torch.no_grad():
            fresh = model.mlp_hidden(window, 2)[0, t - begin]
        torch.testing.assert_close(torch.from_numpy(np.array(rows[t])), fresh, rtol=1e-5, atol=1e-6)


def test_manifest_and_reuse(tmp_path: Path) -> None:
    _harvest(tmp_path)
    manifest = json.loads((tmp_path / "activations_train.json").read_text())
    assert manifest["shape"] == [N_TOKENS, 64] and manifest["dtype"] == "float32"
    assert (manifest["layer"], manifest["site"], manifest["module"]) == (2, "mlp_post", "blocks.2.mlp.act")
    assert manifest["model_config_hash"] == config_hash(tiny_lm().config)
    stamp = (tmp_path / "activations_train.f32").stat().st_mtime_ns
    _harvest(tmp_path)
    assert (tmp_path / "activations_train.f32").stat().st_mtime_ns == stamp
    _harvest(tmp_path, layer=1)
    assert (tmp_path / "activations_train.f32").stat().st_mtime_ns != stamp


def test_other_sites_and_layers(tmp_path: Path) -> None:
    rows = _harvest(tmp_path, layer=1, site="resid_post")
    model = tiny_lm()
    window = torch.from_numpy(tiny_tokens()[:16].astype(np.int64))[None]
    expected = module_activations(model, "blocks.1", window)[0]
    torch.testing.assert_close(torch.from_numpy(np.array(rows[:16])), expected)
    assert rows.shape == (N_TOKENS, 16)
    with pytest.raises(ValueError, match="unknown site"):
        site_module(0, "attn_scores")


def test_activation_source_is_deterministic_and_holds_rows_out(tmp_path: Path) -> None:
    rows = _harvest(tmp_path)
    source = ActivationSource(tmp_path, held_out_fraction=0.05, seed=3)
    again = ActivationSource(tmp_path, held_out_fraction=0.05, seed=3, in_memory=True)
    assert source.dim == 64 and source.n_held_out == 50 and source.n_train == 950
    batch = source.batch(5, 32)
    assert batch.shape == (32, 64) and batch.dtype == torch.float32
    assert torch.equal(batch, again.batch(5, 32))
    assert not torch.equal(batch, source.batch(6, 32))
    assert not torch.equal(batch, ActivationSource(tmp_path, seed=4).batch(5, 32))
    assert (source.indices(5, 500) < 950).all() and (source.indices(-2, 500) >= 950).all()
    index = source.indices(5, 32)
    assert torch.equal(batch, torch.from_numpy(np.array(rows[index])))
    assert torch.equal(source.evaluation_set(64), again.evaluation_set(64))
    assert source.spec()["shape"] == [N_TOKENS, 64]
