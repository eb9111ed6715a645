"""What every architecture shares: hand-written gradients, unit-norm atoms, save/load and the registry."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.builders import sae_config
from training.saes import ARCHS, REGISTRY, SAEConfig, build_sae, load_sae
from training.sweeps.trainer import INIT_STEP, SweepRun


def assert_grads_match_autograd(sae, x: torch.Tensor) -> None:
    """``compute_grads`` equals autograd of ``reference_loss`` for every trained parameter."""
    params = {name: p.detach().clone().requires_grad_(True) for name, p in sae.params().items()}
    sae.reference_loss(params, x).backward()
    sae.compute_grads(x, want_stats=False)
    for name, param in params.items():
        assert param.grad is not None, name
        assert param.grad.abs().max() > 0, f"{name}: the check is vacuous when the gradient is zero"
        torch.testing.assert_close(sae.grads[name], param.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("init", ["data", "random"])
def test_hand_written_gradients_match_autograd_at_initialisation(arch, init, small_toy):
    sae = build_sae(sae_config(arch, init=init))
    sae.initialise_from_data(small_toy.batch(INIT_STEP, 2048))
    assert int(sae.samples_since_fired.max()) == 0
    assert_grads_match_autograd(sae, small_toy.batch(0, 128))


@pytest.mark.parametrize("arch", ARCHS)
def test_hand_written_gradients_match_autograd_after_training(arch, small_toy):
    """After some Adam steps (grads buffers reused, thresholds moved) the gradients still agree."""
    run = SweepRun(sae_config(arch, dead_after=10**9))
    run.sae.initialise_from_data(small_toy.batch(INIT_STEP, 2048))
    for step in range(30):
        run.step(small_toy.batch(step, 128), step, 100, 3e-3, want_stats=False)
    assert_grads_match_autograd(run.sae, small_toy.batch(100, 128))


@pytest.mark.parametrize("arch", ARCHS)
def test_step_stats_report_the_reference_loss(arch, small_toy):
    sae = build_sae(sae_config(arch))
    sae.initialise_from_data(small_toy.batch(INIT_STEP, 2048))
    x = small_toy.batch(0, 256)
    reference = sae.reference_loss(sae.params(), x).item()
    stats = sae.compute_grads(x, want_stats=True)
    assert stats.loss == pytest.approx(reference, rel=1e-4)
    assert stats.loss == pytest.approx(stats.recon + stats.sparsity, rel=1e-6)
    err = (x - sae.decode(sae.encode(x))).pow(2).sum().item()
    if arch != "batchtopk":
        assert stats.recon == pytest.approx(err / x.shape[0], rel=1e-4)
        assert stats.fvu == pytest.approx(err / (x - x.mean(dim=0)).pow(2).sum().item(), rel=1e-4)
    assert 0 < stats.l0 <= sae.config.dict_size


@pytest.mark.parametrize("arch", ARCHS)
def test_decoder_atoms_stay_unit_norm_while_training(arch, small_toy):
    run = SweepRun(sae_config(arch, dead_after=1024))
    run.sae.initialise_from_data(small_toy.batch(INIT_STEP, 2048))
    before = {name: p.clone() for name, p in run.sae.params().items()}
    for step in range(40):
        stats = run.step(small_toy.batch(step, 128), step, 60, 1e-2, want_stats=step == 39)
    norms = run.sae.W_dec.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-5)
    assert all(not torch.equal(before[name], p) for name, p in run.sae.params().items())
    assert stats is not None and stats.fvu < 1.0
    if arch == "tied":
        assert torch.equal(run.sae.W_enc, run.sae.W_dec)


@pytest.mark.parametrize("arch", ARCHS)
def test_training_lowers_the_loss(arch, small_toy):
    run = SweepRun(sae_config(arch))
    run.sae.initialise_from_data(small_toy.batch(INIT_STEP, 2048))
    held_out = small_toy.evaluation_set(2048)
    before = run.sae.reference_loss(run.sae.params(), held_out).item()
    for step in range(150):
        run.step(small_toy.batch(step, 256), step, 150, 3e-3, want_stats=False)
    after = run.sae.reference_loss(run.sae.params(), held_out).item()
    assert after < 0.8 * before


@pytest.mark.parametrize("arch", ARCHS)
def test_save_and_load_round_trip(arch, small_toy, tmp_path):
    run = SweepRun(sae_config(arch))
    run.sae.initialise_from_data(small_toy.batch(INIT_STEP, 2048))
    for step in range(20):
        run.step(small_toy.batch(step, 128), step, 20, 3e-3, want_stats=False)
    run.sae.save(tmp_path / "sae", {"samples": 2560})
    loaded = load_sae(tmp_path / "sae")
    assert type(loaded) is REGISTRY[arch]
    assert loaded.config == run.sae.config
    for name, p in run.sae.params().items():
        assert torch.equal(loaded.params()[name], p), name
    x = small_toy.evaluation_set(512)
    assert torch.equal(loaded.encode(x), run.sae.encode(x))
    assert torch.equal(loaded.reconstruct(x), run.sae.reconstruct(x))
    meta = json.loads((tmp_path / "sae" / "config.json").read_text())
    assert meta["samples"] == 2560 and meta["config"]["arch"] == arch


def test_tied_save_keeps_the_encoder_for_readers_that_expect_it(tmp_path):
    sae = build_sae(sae_config("tied"))
    sae.save(tmp_path)
    tensors = load_file(str(tmp_path / "sae.safetensors"))
    assert torch.equal(tensors["W_enc"], sae.W_dec)


@pytest.mark.parametrize("keep", [0.5, 0.0, 0.999], ids=["half", "empty", "last-byte-missing"])
def test_loading_a_truncated_file_raises_value_error(keep, tmp_path):
    build_sae(sae_config("relu")).save(tmp_path)
    weights = tmp_path / "sae.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match="unreadable or corrupt"):
        load_sae(tmp_path)


def test_loading_a_file_missing_a_tensor_raises_value_error(tmp_path):
    from safetensors.torch import save_file

    sae = build_sae(sae_config("jumprelu"))
    sae.save(tmp_path)
    tensors = load_file(str(tmp_path / "sae.safetensors"))
    del tensors["log_threshold"]
    save_file(tensors, str(tmp_path / "sae.safetensors"))
    with pytest.raises(ValueError, match="log_threshold"):
        load_sae(tmp_path)


def test_loading_a_folder_without_an_sae_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_sae(tmp_path)


def test_loading_a_tensor_of_the_wrong_shape_raises_value_error(tmp_path):
    build_sae(sae_config("relu", dict_size=32)).save(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["config"]["dict_size"] = 48
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="shape"):
        load_sae(tmp_path)


def test_unknown_arch_is_rejected():
    with pytest.raises(ValueError, match="unknown arch 'gated'"):
        build_sae(SAEConfig(arch="gated", d_in=8, dict_size=16, l1=0.1))


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_k_larger_than_the_dictionary_is_rejected(arch):
    with pytest.raises(ValueError, match="exceeds the dictionary size"):
        build_sae(SAEConfig(arch=arch, d_in=8, dict_size=16, k=17))
    assert build_sae(SAEConfig(arch=arch, d_in=8, dict_size=16, k=16)).config.k == 16


@pytest.mark.parametrize(("arch", "missing"), [("relu", "l1"), ("tied", "l1"), ("jumprelu", "l1"), ("topk", "k")])
def test_missing_sparsity_setting_is_rejected(arch, missing):
    with pytest.raises(ValueError, match=f"needs {'an l1' if missing == 'l1' else 'k'}"):
        build_sae(SAEConfig(arch=arch, d_in=8, dict_size=16))


@pytest.mark.parametrize("field", [{"dict_size": 0}, {"dict_size": -4}, {"l1": -0.1}, {"k": 0}, {"d_in": 0}])
def test_config_rejects_invalid_values(field):
    base = {"arch": "relu", "d_in": 8, "dict_size": 16, "l1": 0.1}
    with pytest.raises(ValueError):
        SAEConfig(**{**base, **field})


def test_same_seed_same_initialisation_different_seed_differs(small_toy):
    sample = small_toy.batch(INIT_STEP, 1024)
    first, second, other = (build_sae(sae_config("relu", seed=s)) for s in (5, 5, 6))
    for sae in (first, second, other):
        sae.initialise_from_data(sample)
    assert torch.equal(first.W_dec, second.W_dec)
    assert not torch.equal(first.W_dec, other.W_dec)


def test_data_initialisation_uses_centred_samples_as_atoms(small_toy):
    sample = small_toy.batch(INIT_STEP, 1024)
    sae = build_sae(sae_config("relu", dict_size=64))
    sae.initialise_from_data(sample)
    centred = sample - sae.b_dec
    cos = (sae.W_dec @ (centred / centred.norm(dim=1, keepdim=True)).T).max(dim=1).values
    torch.testing.assert_close(cos, torch.ones(64), rtol=0, atol=1e-5)
    assert torch.equal(sae.W_enc, sae.W_dec * sae.config.encoder_scale)
    assert (sample - sae.b_dec).norm(dim=1).sum() < (sample - sample.mean(dim=0)).norm(dim=1).sum()


@pytest.mark.parametrize("arch", ["relu", "tied", "jumprelu", "topk"])
def test_sparsity_penalty_completes_the_objective_on_inference_codes(arch, small_toy):
    """Squared error plus ``sparsity_penalty`` of the inference codes is the training loss (batchtopk's
    training selection is batch-wide, so its inference codes differ by design)."""
    sae = build_sae(sae_config(arch))
    sae.initialise_from_data(small_toy.batch(INIT_STEP, 2048))
    sae.set_progress(100, 100)  # top-k: past the k anneal, so training and inference keep the same k
    x = small_toy.batch(0, 256)
    codes = sae.encode(x)
    objective = (sae.decode(codes) - x).pow(2).sum(dim=1).mean() + sae.sparsity_penalty(codes)
    assert objective.item() == pytest.approx(sae.reference_loss(sae.params(), x).item(), rel=1e-5)
    if arch != "topk":
        assert sae.sparsity_penalty(codes).item() > 0
