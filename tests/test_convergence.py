"""Held-out convergence tracking: the tracker against direct evaluation, resumption, and the report."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.builders import sae_config
from training.sweeps.convergence import HeldOutTracker, convergence_report, heldout_point, read_heldout_log
from training.sweeps.trainer import TrainConfig, train_sweep

TRAIN = TrainConfig(samples=60_000, batch_size=256, log_every=10, checkpoint_every=40, init_samples=2048)
EVERY = 11  # does not divide the 234 steps, so the last record is the end's own


def configs():
    return [sae_config("relu", dict_size=48, l1=0.3), sae_config("topk", dict_size=48, k=4)]


def track(small_toy, folder: Path, stop_after: int | None = None):
    rows = small_toy.batch(-7, 2048)
    tracker = HeldOutTracker(rows, TRAIN.batch_size, EVERY, folder / "heldout_log.jsonl")
    runs = train_sweep(configs(), small_toy, TRAIN, folder, progress=False, stop_after=stop_after, observer=tracker)
    return runs, rows, read_heldout_log(folder / "heldout_log.jsonl")


@pytest.fixture(scope="module")
def tracked(small_toy, tmp_path_factory):
    return track(small_toy, tmp_path_factory.mktemp("convergence") / "sweep")


def test_records_every_n_steps_and_the_end_with_the_final_sae_s_own_numbers(tracked):
    runs, rows, log = tracked
    for index, run in enumerate(runs):
        lines = [line for line in log if line["index"] == index]
        assert [line["step"] for line in lines] == [*range(EVERY, TRAIN.steps, EVERY), TRAIN.steps]
        assert lines[-1]["fraction"] == 1.0
        final = heldout_point(run.sae, rows)
        for key in ("objective", "fvu", "l0"):
            assert lines[-1][key] == pytest.approx(final[key], rel=1e-6)
        # the SAEs learn: the objective on the same rows ends well below where it was first recorded
        assert lines[-1]["objective"] < 0.8 * lines[0]["objective"]


def test_the_relu_objective_adds_the_l1_term_to_the_squared_error(tracked):
    runs, rows, _ = tracked
    sae = runs[0].sae
    codes = sae.encode(rows)
    expected = (sae.decode(codes) - rows).pow(2).sum(dim=1).mean() + sae.config.l1 * codes.sum(dim=1).mean()
    assert heldout_point(sae, rows)["objective"] == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("stop_after", [44, 40], ids=["at-a-record", "at-a-checkpoint"])
def test_a_resumed_sweep_ends_with_the_same_records(tracked, small_toy, tmp_path, stop_after):
    _, _, log = tracked
    track(small_toy, tmp_path, stop_after=stop_after)
    _, _, resumed = track(small_toy, tmp_path)
    assert resumed == log
    _, _, again = track(small_toy, tmp_path)  # a finished sweep run again adds nothing
    assert again == log


def test_report_measures_the_fall_over_the_window_and_flags_flat_curves():
    def curve(run: str, objectives: list[float], final_fvu: float) -> list[dict]:
        fractions = [0.25, 0.5, 0.7, 1.0]
        return [
            {"run": run, "step": int(f * 100), "fraction": f, "objective": o, "fvu": final_fvu, "l0": 5.0}
            for f, o in zip(fractions, objectives, strict=True)
        ]

    log = curve("flat", [2.0, 1.01, 1.0, 0.95], 0.1) + curve("falling", [2.0, 1.3, 1.0, 0.9], 0.2)
    report = convergence_report(log, window=(0.5, 0.7))
    assert report["flat"]["objective_fall"] == pytest.approx(0.01)
    assert report["flat"]["converged"] is True
    assert report["flat"]["window"] == [0.5, 0.7]
    assert report["falling"]["objective_fall"] == pytest.approx(0.3)
    assert report["falling"]["converged"] is False
    assert (report["falling"]["objective"], report["falling"]["fvu"]) == (0.9, 0.2)
