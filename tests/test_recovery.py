"""Recovery tracking and init comparison on toy data: the tracker against direct computation, resumption,
first-recovery times, Spearman on constructed cases, and ``monosemantic toy --init .. --track-recovery N``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from app.cli.commands import main
from tests.builders import sae_config
from training.analysis.metrics import RECOVERED_COSINE, max_cosines, mmcs
from training.experiments.toy_experiment import ToyExperimentConfig
from training.saes import load_sae
from training.sweeps.init_comparison import init_comparison, samples_to_reach
from training.sweeps.recovery import (
    RecoveryTracker,
    SAERecovery,
    read_recoveries,
    read_recovery_log,
    recovery_report,
    recovery_spearman,
)
from training.sweeps.trainer import TrainConfig, train_sweep

TRAIN = TrainConfig(samples=100_000, batch_size=256, log_every=10, checkpoint_every=40, init_samples=2048)
EVERY = 7  # does not divide the 390 steps, so the last record is the end's own


def configs():
    """Two SAEs that differ only in their decoder initialisation, told apart by their tags."""
    return [sae_config("relu", dict_size=64, l1=1.0, init=init, tag=init) for init in ("random", "data")]


def track(small_toy, folder: Path, every: int = EVERY, stop_after: int | None = None):
    tracker = RecoveryTracker(small_toy.features, TRAIN.batch_size, every, folder / "recovery_log.jsonl")
    runs = train_sweep(configs(), small_toy, TRAIN, folder, progress=False, stop_after=stop_after, observer=tracker)
    return runs, read_recovery_log(folder / "recovery_log.jsonl")


@pytest.fixture(scope="module")
def tracked(small_toy, tmp_path_factory):
    folder = tmp_path_factory.mktemp("recovery") / "sweep"
    runs, log = track(small_toy, folder)
    return folder, runs, log


def test_records_at_the_start_every_n_steps_and_at_the_end(tracked):
    _, _, log = tracked
    expected = [*range(0, TRAIN.steps, EVERY), TRAIN.steps]
    for index, config in enumerate(configs()):
        lines = [line for line in log if line["index"] == index]
        assert [line["step"] for line in lines] == expected
        assert all(line["run"] == config.name and line["init"] == config.init for line in lines)
        assert all(line["samples"] == line["step"] * TRAIN.batch_size for line in lines)


def test_final_best_cosines_equal_a_direct_computation(tracked, small_toy):
    folder, runs, log = tracked
    for recovery, run in zip(read_recoveries(log), runs, strict=True):
        direct = max_cosines(small_toy.features, load_sae(folder / "saes" / run.config.name).W_dec)
        np.testing.assert_allclose(recovery.final_cosines, direct.numpy(), rtol=0, atol=1e-6)
        assert recovery.mmcs[-1] == pytest.approx(mmcs(run.sae.W_dec, small_toy.features), abs=1e-6)
        assert recovery.recovered_fraction[-1] == pytest.approx(float((direct >= RECOVERED_COSINE).double().mean()))


def test_first_recovery_is_the_first_record_at_or_above_the_threshold(tracked):
    _, _, log = tracked
    recoveries = read_recoveries(log)
    assert sum(s is not None for r in recoveries for s in r.first_samples) >= 10, "too few features to check"
    for recovery in recoveries:
        for feature, first in enumerate(recovery.first_samples):
            column = recovery.cosines[:, feature]
            if first is None:
                assert (column < RECOVERED_COSINE).all()
                continue
            at = recovery.samples.index(first)
            assert column[at] >= RECOVERED_COSINE
            assert (column[:at] < RECOVERED_COSINE).all()


def test_the_start_record_is_the_initialisation_the_comparison_rebuilds(tracked, small_toy):
    folder, runs, log = tracked
    train_log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    rows = init_comparison(runs, train_log, small_toy, TRAIN, small_toy.features)
    starts = [line for line in log if line["step"] == 0]
    assert [row["init"] for row in rows] == ["random", "data"]
    for row, start in zip(rows, starts, strict=True):
        assert row["initial_mmcs"] == pytest.approx(float(np.mean(start["cosines"])), abs=1e-6)
        assert row["final_mmcs"] == pytest.approx(read_recoveries(log)[start["index"]].mmcs[-1], abs=1e-6)
    # data samples start nearer the features than Gaussian atoms on this toy
    assert rows[1]["initial_mmcs"] > rows[0]["initial_mmcs"]


@pytest.mark.parametrize("stop_after", [49, 50], ids=["at-a-record", "between-records"])
def test_a_resumed_sweep_ends_with_the_same_records(tracked, small_toy, tmp_path, stop_after):
    _, _, log = tracked
    track(small_toy, tmp_path, stop_after=stop_after)
    assert max(line["step"] for line in read_recovery_log(tmp_path / "recovery_log.jsonl")) == 49
    _, resumed = track(small_toy, tmp_path)
    assert resumed == log
    _, again = track(small_toy, tmp_path)  # a finished sweep run again records its end once more, nothing else
    assert again == log


def test_resuming_with_another_interval_is_refused(small_toy, tmp_path):
    track(small_toy, tmp_path, stop_after=20)
    with pytest.raises(ValueError, match="recovery tracking every 5 steps"):
        track(small_toy, tmp_path, every=5)


def test_first_samples_on_a_constructed_log():
    cosines = np.array([[0.1, 0.95, 0.2], [0.91, 0.5, 0.3], [0.85, 0.97, 0.899]])
    recovery = SAERecovery("a", "data", 0.9, [0, 100, 200], cosines)
    # reaching the threshold counts once, even if the feature is lost again later
    assert recovery.first_samples == [100, 0, None]
    assert recovery.recovered_fraction == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    assert recovery.mmcs == pytest.approx(cosines.mean(axis=1).tolist())


def test_spearman_ranks_never_recovered_features_last():
    probabilities = [0.5, 0.4, 0.3, 0.2, 0.1]
    rho, p = recovery_spearman(probabilities, [10, 20, 30, 40, 50])
    assert rho == pytest.approx(-1.0) and p < 0.05
    # probability ranks 5..1 against time ranks 1, 2, 3, 4.5, 4.5: covariance -9.5 over sqrt(10 * 9.5)
    rho, _ = recovery_spearman(probabilities, [10, 20, 30, None, None])
    assert rho == pytest.approx(-9.5 / math.sqrt(95))
    rho, _ = recovery_spearman(probabilities, [50, 40, 30, 20, 10])
    assert rho == pytest.approx(1.0)
    assert recovery_spearman(probabilities, [None] * 5) == (None, None)


def test_report_summaries_count_recovered_and_never_recovered():
    log = [
        {"run": "a", "index": 0, "init": "data", "step": s, "samples": 10 * s, "every": 1, "cosines": c}
        for s, c in [(0, [0.1, 0.2, 0.3]), (1, [0.95, 0.2, 0.3]), (2, [0.95, 0.92, 0.5])]
    ]
    report = recovery_report(log, [0.3, 0.2, 0.1])
    summary = report["saes"][0]["summary"]
    assert report["saes"][0]["first_samples"] == [10, 20, None]
    assert (summary["recovered"], summary["never_recovered"]) == (2, 1)
    assert summary["spearman"] == pytest.approx(-1.0)
    assert summary["median_samples_to_recover"] == 15 and summary["samples_to_recover_all"] is None
    assert report["every_steps"] == 1


def test_samples_to_reach_is_the_first_point_at_or_above():
    points = [(200, 0.96), (0, 0.5), (100, 0.9), (300, 0.93)]
    assert samples_to_reach(points, 0.9) == 100
    assert samples_to_reach(points, 0.95) == 200
    assert samples_to_reach(points, 0.99) is None


def test_inits_make_one_tagged_sae_per_scheme():
    config = ToyExperimentConfig(dict_sizes=[32, 64], l1=[0.03], inits=["random", "data"])
    assert [(c.init, c.tag, c.dict_size) for c in config.sae_configs()] == [
        ("random", "random", 32),
        ("random", "random", 64),
        ("data", "data", 32),
        ("data", "data", 64),
    ]
    with pytest.raises(ValueError, match="distinct"):
        ToyExperimentConfig(dict_sizes=[32], l1=[0.03], inits=["data", "data"])


TINY = ["toy", "--dim", "16", "--features", "32", "--samples", "4096", "--batch-size", "128", "--dict-sizes", "32"]


@pytest.mark.timeout(60)
def test_cli_compares_inits_and_tracks_recovery(tmp_path, capsys):
    out = tmp_path / "toy"
    argv = [*TINY, "--l1", "0.03", "--init", "random,orthogonal,data", "--track-recovery", "4", "--no-progress"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"runs", "mmcs_with_larger", "feature_count_estimate", "init_comparison", "recovery"} <= metrics.keys()
    assert [run["name"] for run in metrics["runs"]] == [
        "relu_n32_l10.03_random",
        "relu_n32_l10.03_orthogonal",
        "relu_n32_l10.03_data",
    ]
    rows = metrics["init_comparison"]
    assert [row["init"] for row in rows] == ["random", "orthogonal", "data"]
    for row, run in zip(rows, metrics["runs"], strict=True):
        assert set(row["samples_to_mmcs"]) == {"0.8", "0.9", "0.95", "0.99"}
        assert all(n is None or 0 <= n <= 4096 for n in row["samples_to_mmcs"].values())
        assert row["final_mmcs"] == pytest.approx(run["mmcs"], abs=1e-9)
        assert 0 < row["initial_mmcs"] < 1
    report = json.loads((out / "recovery.json").read_text())
    assert metrics["recovery"]["saes"] == [sae["summary"] for sae in report["saes"]]
    assert len(report["probabilities"]) == 32 and report["every_steps"] == 4
    for sae, run in zip(report["saes"], metrics["runs"], strict=True):
        assert sae["samples"] == list(range(0, 4096 + 1, 4 * 128))
        assert sae["mmcs"][-1] == pytest.approx(run["mmcs"], abs=1e-6)
        assert len(sae["first_samples"]) == 32
    figures = out / "figures"
    for name in ("mmcs_by_init.png", "recovery_vs_probability.png", "recovered_fraction.png"):
        assert (figures / name).stat().st_size > 0
    assert (figures / "heatmap_mmcs_relu_data.png").exists()
    assert "to 0.95" in printed and "Spearman" in printed


@pytest.mark.timeout(60)
def test_cli_without_the_new_flags_writes_no_recovery(tmp_path):
    out = tmp_path / "toy"
    (out).mkdir()
    (out / "recovery.json").write_text("{}")  # a stale report from an earlier tracked run must go
    assert main([*TINY, "--l1", "0.03", "--no-progress", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recovery"] is None and not (out / "recovery.json").exists()
    assert [(row["name"], row["init"]) for row in metrics["init_comparison"]] == [("relu_n32_l10.03", "data")]
    assert not (out / "figures" / "mmcs_by_init.png").exists()


def test_cli_rejects_an_unknown_init_scheme(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*TINY, "--init", "random,kaiming", "--out", str(tmp_path / "toy")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "kaiming" in err[0]
