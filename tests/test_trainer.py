"""The sweep trainer: shared batches, resumption, artifacts, and that training recovers toy features."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.builders import RecordingSource, sae_config
from training.analysis.metrics import mmcs
from training.data.toy import ToyConfig, ToyData
from training.saes import build_sae, load_sae
from training.sweeps.trainer import HALF_DIR, INIT_STEP, TrainConfig, half_step, train_sweep

SWEEP_TRAIN = TrainConfig(samples=40_000, batch_size=256, checkpoint_every=20, log_every=10, init_samples=2048)
STEPS = SWEEP_TRAIN.steps


def sweep_configs():
    """relu, topk and batchtopk, oversized for G=32 so latents die: resampling and aux-k both run."""
    return [
        sae_config("relu", dict_size=128, l1=1.0, dead_after=512, resample=True),
        sae_config("topk", dict_size=128, k=2, dead_after=512, k_start=2.0),
        sae_config("batchtopk", dict_size=128, k=2, dead_after=512),
    ]


def read_log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(small_toy, tmp_path_factory) -> tuple[Path, list]:
    folder = tmp_path_factory.mktemp("sweep") / "uninterrupted"
    runs = train_sweep(sweep_configs(), small_toy, SWEEP_TRAIN, folder, progress=False)
    return folder, runs


@pytest.fixture(scope="module")
def resumed(small_toy, tmp_path_factory) -> tuple[Path, list, list]:
    """The same sweep stopped after step 75 (not a checkpoint or log step), then resumed to the end."""
    folder = tmp_path_factory.mktemp("sweep") / "resumed"
    stopped = train_sweep(sweep_configs(), small_toy, SWEEP_TRAIN, folder, progress=False, stop_after=75)
    assert json.loads((folder / "checkpoint" / "state.json").read_text())["step"] == 75
    assert not (folder / "saes").exists()
    stopped_weights = [run.sae.W_dec.clone() for run in stopped]
    runs = train_sweep(sweep_configs(), small_toy, SWEEP_TRAIN, folder, progress=False)
    return folder, stopped_weights, runs


def test_resumed_sweep_ends_with_the_same_weights(uninterrupted, resumed):
    folder, runs = uninterrupted
    resumed_folder, stopped_weights, again_runs = resumed
    assert not any(torch.equal(w, run.sae.W_dec) for w, run in zip(stopped_weights, runs, strict=True))
    for done, again in zip(runs, again_runs, strict=True):
        for name, p in done.sae.params().items():
            assert torch.equal(again.sae.params()[name], p), (done.config.name, name)
        for name, b in done.sae.buffers().items():
            assert torch.equal(again.sae.buffers()[name], b), (done.config.name, name)
    for name in (c.name for c in sweep_configs()):
        saved = load_file(str(resumed_folder / "saes" / name / "sae.safetensors"))
        reference = load_file(str(folder / "saes" / name / "sae.safetensors"))
        assert saved.keys() == reference.keys()
        assert all(torch.equal(saved[k], reference[k]) for k in saved), name


def test_resumed_log_has_no_duplicates_and_matches_the_uninterrupted_log(uninterrupted, resumed):
    log = read_log(resumed[0])
    keys = [(line["index"], line["step"]) for line in log]
    assert len(keys) == len(set(keys))
    reference = read_log(uninterrupted[0])
    assert sorted(keys) == sorted((line["index"], line["step"]) for line in reference)
    by_key = {(line["index"], line["step"]): line for line in reference}
    assert all(line == by_key[(line["index"], line["step"])] for line in log)


def test_resuming_at_a_logged_step_keeps_that_steps_log_line(uninterrupted, small_toy, tmp_path):
    folder, _ = uninterrupted
    train_sweep(sweep_configs(), small_toy, SWEEP_TRAIN, tmp_path, progress=False, stop_after=60)
    train_sweep(sweep_configs(), small_toy, SWEEP_TRAIN, tmp_path, progress=False)
    keys = {(line["index"], line["step"]) for line in read_log(tmp_path)}
    assert keys == {(line["index"], line["step"]) for line in read_log(folder)}


def test_rerunning_a_finished_sweep_changes_nothing(uninterrupted, small_toy, tmp_path):
    folder, runs = uninterrupted
    train_sweep(sweep_configs(), small_toy, SWEEP_TRAIN, tmp_path, progress=False)
    before = read_log(tmp_path)
    again = train_sweep(sweep_configs(), small_toy, SWEEP_TRAIN, tmp_path, progress=False)
    assert all(torch.equal(a.sae.W_dec, b.sae.W_dec) for a, b in zip(runs, again, strict=True))
    assert read_log(tmp_path) == before


def test_log_lines_every_log_every_steps_and_at_the_end(uninterrupted):
    folder, _ = uninterrupted
    log = read_log(folder)
    expected_steps = sorted({*range(SWEEP_TRAIN.log_every, STEPS + 1, SWEEP_TRAIN.log_every), STEPS})
    for index, config in enumerate(sweep_configs()):
        lines = [line for line in log if line["index"] == index]
        assert [line["step"] for line in lines] == expected_steps
        assert all(line["run"] == config.name for line in lines)
        assert all(line["samples"] == line["step"] * SWEEP_TRAIN.batch_size for line in lines)
        assert all(0 <= line["fvu"] and line["l0"] > 0 and line["lr"] > 0 for line in lines)
    assert [line["l0"] for line in log if line["index"] == 2][-1] == pytest.approx(2.0)


def test_finished_sweep_writes_loadable_saes(uninterrupted, small_toy):
    folder, runs = uninterrupted
    assert json.loads((folder / "sweep.json").read_text())["train"]["samples"] == SWEEP_TRAIN.samples
    x = small_toy.evaluation_set(512)
    for run in runs:
        sae_folder = folder / "saes" / run.config.name
        assert (sae_folder / "config.json").exists() and (sae_folder / "sae.safetensors").exists()
        meta = json.loads((sae_folder / "config.json").read_text())
        assert meta["samples"] == STEPS * SWEEP_TRAIN.batch_size
        assert meta["samples_per_s"] > 0
        assert meta["config"] == run.config.model_dump()
        assert torch.equal(load_sae(sae_folder).encode(x), run.sae.encode(x))
        norms = run.sae.W_dec.norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-5)


def test_every_sae_sees_the_same_batches_read_once_per_step(small_toy, tmp_path):
    train = TrainConfig(samples=20 * 128, batch_size=128, init_samples=512, checkpoint_every=7)
    source = RecordingSource(small_toy)
    configs = [sae_config("relu", l1=0.1), sae_config("topk", k=4)]
    together = train_sweep(configs, source, train, tmp_path / "both", progress=False)
    assert source.steps == [INIT_STEP, *range(20)]
    alone = train_sweep(configs[:1], small_toy, train, tmp_path / "alone", progress=False)
    for name, p in alone[0].sae.params().items():
        assert torch.equal(together[0].sae.params()[name], p), name


def test_identical_configs_in_one_sweep_train_identically(small_toy, tmp_path):
    train = TrainConfig(samples=30 * 128, batch_size=128, init_samples=512)
    configs = [
        sae_config("jumprelu", l1=0.01, tag="a"),
        sae_config("relu", l1=0.1, seed=1),
        sae_config("jumprelu", l1=0.01, tag="b"),
    ]
    runs = train_sweep(configs, small_toy, train, tmp_path, progress=False)
    assert all(torch.equal(runs[0].sae.params()[n], runs[2].sae.params()[n]) for n in runs[0].sae.params())


def test_sweeps_refuse_two_saes_with_one_name(small_toy, tmp_path):
    train = TrainConfig(samples=10 * 128, batch_size=128, init_samples=512)
    configs = [sae_config("relu", l1=0.1), sae_config("relu", l1=0.1, lr=1e-2)]
    with pytest.raises(ValueError, match="distinct names"):
        train_sweep(configs, small_toy, train, tmp_path, progress=False)


def test_a_different_sweep_in_the_same_folder_is_rejected(small_toy, tmp_path):
    train = TrainConfig(samples=10 * 128, batch_size=128, init_samples=512)
    train_sweep([sae_config("relu", l1=0.1)], small_toy, train, tmp_path, progress=False, stop_after=5)
    spec = (tmp_path / "sweep.json").read_text()
    with pytest.raises(ValueError, match="different settings"):
        train_sweep([sae_config("relu", l1=0.2)], small_toy, train, tmp_path, progress=False)
    with pytest.raises(ValueError, match="different settings"):
        train_sweep(
            [sae_config("relu", l1=0.1)],
            small_toy,
            train.model_copy(update={"samples": 2560}),
            tmp_path,
            progress=False,
        )
    with pytest.raises(ValueError, match="different settings"):
        train_sweep([sae_config("relu", l1=0.1)], small_toy, train, tmp_path, source_spec={"seed": 1}, progress=False)
    assert (tmp_path / "sweep.json").read_text() == spec


RECOVERY_TOY = ToyConfig(dim=32, n_features=64, seed=0)
RECOVERY_CONFIGS = {
    "relu": sae_config("relu", d_in=32, dict_size=64, l1=0.3),
    "tied": sae_config("tied", d_in=32, dict_size=64, l1=0.3),
    "jumprelu": sae_config("jumprelu", d_in=32, dict_size=64, l1=0.03),
    "topk": sae_config("topk", d_in=32, dict_size=64, k=5),
    "batchtopk": sae_config("batchtopk", d_in=32, dict_size=64, k=5),
}
# Measured at 250k samples on seeds 0 and 1: relu 0.96-0.97, tied 0.84-0.86, topk 0.85, batchtopk
# 0.76-0.82; jumprelu 0.75 from its default random atoms (0.90 from data-sample atoms here, but 0.79
# against 0.92 on the study's larger setting, which decided the default); the floors leave a margin.
RECOVERY_FLOOR = {"relu": 0.9, "tied": 0.75, "jumprelu": 0.68, "topk": 0.75, "batchtopk": 0.65}


@pytest.fixture(scope="module")
def recovery_sweep(tmp_path_factory) -> tuple[ToyData, Path, list]:
    toy = ToyData(RECOVERY_TOY)
    folder = tmp_path_factory.mktemp("recovery")
    train = TrainConfig(samples=250_000, batch_size=256, log_every=100)
    runs = train_sweep(list(RECOVERY_CONFIGS.values()), toy, train, folder, ground_truth=toy.features, progress=False)
    return toy, folder, runs


@pytest.mark.parametrize("arch", list(RECOVERY_CONFIGS))
def test_training_recovers_the_toy_features(arch, recovery_sweep):
    toy, folder, runs = recovery_sweep
    index = list(RECOVERY_CONFIGS).index(arch)
    final = mmcs(runs[index].sae.W_dec, toy.features)
    assert final > RECOVERY_FLOOR[arch]
    curve = [line["mmcs"] for line in read_log(folder) if line["index"] == index]
    assert curve[-1] == pytest.approx(final, abs=1e-6)
    assert final > curve[0] + 0.05
    initial = build_sae(RECOVERY_CONFIGS[arch])
    initial.initialise_from_data(toy.batch(INIT_STEP, TrainConfig(samples=1).init_samples))
    assert final > mmcs(initial.W_dec, toy.features) + 0.1


def test_the_log_records_the_training_dead_fraction(uninterrupted):
    folder, runs = uninterrupted
    last = {line["run"]: line for line in read_log(folder)}  # the final step is always logged
    for run in runs:
        silent = run.sae.samples_since_fired >= run.config.dead_after
        assert last[run.config.name]["dead_fraction"] == pytest.approx(silent.float().mean().item())
    fresh = build_sae(runs[0].config)
    fresh.samples_since_fired[: fresh.config.dict_size // 4] = fresh.config.dead_after
    assert fresh.dead_fraction() == 0.25


def test_every_sae_is_kept_at_half_its_rows_and_a_resumed_sweep_keeps_the_same(uninterrupted, resumed):
    folder, runs = uninterrupted
    resumed_folder = resumed[0]
    for run in runs:
        half = load_sae(folder / HALF_DIR / run.config.name)
        again = load_sae(resumed_folder / HALF_DIR / run.config.name)
        meta = json.loads((folder / HALF_DIR / run.config.name / "config.json").read_text())
        assert meta["samples"] == half_step(STEPS) * SWEEP_TRAIN.batch_size
        for name, p in half.params().items():
            assert torch.equal(again.params()[name], p), (run.config.name, name)
        assert not torch.equal(half.W_dec, run.sae.W_dec)
