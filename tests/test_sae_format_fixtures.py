"""Folders written by the real SAELens and sparsify (tests/data/formats): our imports compute what they computed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training.formats.raw import from_raw, to_raw
from training.formats.saelens import read_saelens, write_saelens
from training.formats.sparsify import read_sparsify, write_sparsify

FIXTURES = Path(__file__).parent / "data" / "formats"
SAELENS = ["saelens_topk", "saelens_topk_checkpoint", "saelens_standard", "saelens_jumprelu", "saelens_batchtopk"]
SPARSIFY = FIXTURES / "sparsify" / "layers.2.mlp"


def rows() -> torch.Tensor:
    return load_file(str(FIXTURES / "rows.safetensors"))["rows"]


def reference(name: str) -> dict[str, torch.Tensor]:
    """The package's own codes and reconstructions of ``rows()``."""
    return load_file(str(FIXTURES / f"{name}.reference.safetensors"))


def fvu(x: torch.Tensor, recon: torch.Tensor) -> float:
    return float((x - recon).pow(2).sum() / (x - x.mean(dim=0)).pow(2).sum())


def assert_same_outputs(codes: torch.Tensor, recon: torch.Tensor, expected: dict[str, torch.Tensor]) -> None:
    assert torch.equal(codes != 0, expected["codes"] != 0), "a different set of latents fires"
    assert torch.allclose(codes, expected["codes"], rtol=1e-5, atol=1e-5)
    assert torch.allclose(recon, expected["recon"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", SAELENS)
def test_an_sae_saved_by_saelens_imports_with_saelens_codes_and_reconstructions(name):
    x, expected = rows(), reference(name)
    raw = read_saelens(FIXTURES / name)
    codes = raw.encode(x)
    assert_same_outputs(codes, raw.decode(codes), expected)
    # As one of ours on a run's rescaled rows, the codes are the same and the FVU is SAELens's own.
    scale = 0.37
    ours = from_raw(raw, scale)
    assert_same_outputs(ours.encode(x * scale), ours.reconstruct(x * scale) / scale, expected)
    assert fvu(x, ours.reconstruct(x * scale) / scale) == pytest.approx(fvu(x, expected["recon"]), rel=1e-4)


def test_saelens_topk_defaults_rescale_by_decoder_norm_and_the_import_folds_it():
    for name in ("saelens_topk", "saelens_topk_checkpoint"):
        cfg = json.loads((FIXTURES / name / "cfg.json").read_text())
        assert cfg["rescale_acts_by_decoder_norm"] is True
        raw = read_saelens(FIXTURES / name)
        assert [c.split(":")[0] for c in raw.conversions] == ["rescale_acts_by_decoder_norm true"]
        assert torch.allclose(raw.W_dec.norm(dim=-1), torch.ones(raw.d_sae), atol=1e-5)
    # The checkpoint keeps its decoder norms unfolded, so folding is what makes its codes right.
    stored = load_file(str(FIXTURES / "saelens_topk_checkpoint" / "sae_weights.safetensors"))
    assert stored["W_dec"].norm(dim=-1).std() > 0.1


@pytest.mark.parametrize("name", SAELENS)
def test_a_saelens_round_trip_keeps_cfg_json_and_saelens_outputs(tmp_path, name):
    raw = read_saelens(FIXTURES / name)
    scale = 1.9
    back = to_raw(from_raw(raw, scale), scale, raw.metadata)
    back.metadata.pop("monosemantic_arch")
    back.source_format, back.source_cfg = raw.source_format, raw.source_cfg
    write_saelens(back, tmp_path / "out")
    original = json.loads((FIXTURES / name / "cfg.json").read_text())
    assert json.loads((tmp_path / "out" / "cfg.json").read_text()) == original
    again = read_saelens(tmp_path / "out")
    codes = again.encode(rows())
    assert_same_outputs(codes, again.decode(codes), reference(name))
    if name != "saelens_topk_checkpoint":  # the checkpoint's decoder norms are folded on the way
        written = load_file(str(tmp_path / "out" / "sae_weights.safetensors"))
        stored = load_file(str(FIXTURES / name / "sae_weights.safetensors"))
        assert set(written) == set(stored)
        for tensor in stored:
            assert torch.allclose(written[tensor], stored[tensor], rtol=1e-5, atol=1e-6), tensor


def test_an_sae_saved_by_sparsify_imports_with_sparsify_codes_and_reconstructions():
    x, expected = rows(), reference("sparsify")
    raw = read_sparsify(SPARSIFY)
    codes = raw.encode(x)
    assert_same_outputs(codes, raw.decode(codes), expected)
    assert raw.metadata == {"hookpoint": "layers.2.mlp"}


def test_a_sparsify_round_trip_keeps_cfg_json_as_written(tmp_path):
    raw = read_sparsify(SPARSIFY)
    back = to_raw(from_raw(raw, 0.6), 0.6, raw.metadata)
    back.metadata.pop("monosemantic_arch")
    back.source_format, back.source_cfg = raw.source_format, raw.source_cfg
    out = tmp_path / "layers.2.mlp"
    write_sparsify(back, out)
    original = json.loads((SPARSIFY / "cfg.json").read_text())
    assert original["expansion_factor"] == 32 and original["normalize_decoder"] is True
    assert json.loads((out / "cfg.json").read_text()) == original
    assert sorted(p.name for p in out.iterdir()) == ["cfg.json", "sae.safetensors"]
    written, stored = load_file(str(out / "sae.safetensors")), load_file(str(SPARSIFY / "sae.safetensors"))
    for tensor in stored:
        assert torch.allclose(written[tensor], stored[tensor], rtol=1e-5, atol=1e-6), tensor
