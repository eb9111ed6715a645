"""The doubling standard: its arithmetic on fixed records, a sweep's report, and the badges users see."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.builders import sae_config
from training.analysis.doubling import DoublingTolerances, estimate_doubling, heldout_snapshot, sae_doubling
from training.saes import build_sae

END = {"fvu": 0.100, "l0": 20.0, "dead": 100, "rare": 50, "mmcs_with_larger": 0.90}


def test_an_sae_holds_when_every_number_stays_within_its_tolerance():
    half = {"fvu": 0.1029, "l0": 20.9, "dead": 80, "rare": 70, "mmcs_with_larger": 0.8901}
    verdict = sae_doubling(half, END, dict_size=1024)
    assert verdict["holds"] and verdict["moved"] == []
    assert verdict["compared"] == ["fvu", "l0", "dead", "rare", "mmcs_with_larger"]


@pytest.mark.parametrize(
    ("metric", "half_value", "change"),
    [
        ("fvu", 0.1040, 0.04),  # 4% relative > 3%
        ("l0", 18.9, 0.055),  # 5.5% relative > 5%
        ("dead", 121, 21 / 1000),  # 2.1% of the size > 2%
        ("rare", 29, 21 / 1000),
        ("mmcs_with_larger", 0.8889, 0.0111),
    ],
)
def test_each_number_that_moves_too_far_is_named_with_its_values(metric, half_value, change):
    verdict = sae_doubling({**END, metric: half_value}, END, dict_size=1000)
    assert not verdict["holds"]
    [moved] = verdict["moved"]
    assert moved["metric"] == metric and moved["half"] == half_value and moved["end"] == END[metric]
    assert moved["change"] == pytest.approx(change, rel=1e-3)


def test_the_largest_size_has_no_mmcs_to_compare_and_tolerances_can_be_set():
    verdict = sae_doubling({**END, "mmcs_with_larger": None}, {**END, "mmcs_with_larger": None}, 512)
    assert verdict["holds"] and "mmcs_with_larger" not in verdict["compared"]
    strict = DoublingTolerances(fvu_relative=0.001)
    assert not sae_doubling({**END, "fvu": 0.1002}, END, 512, strict)["holds"]


def test_an_estimate_holds_within_ten_percent_and_is_unjudged_without_a_value():
    assert estimate_doubling(362, 400)["holds"] is True  # 9.5%
    assert estimate_doubling(440, 906)["holds"] is False  # the relu dead-fraction view that doubled
    assert estimate_doubling(None, 400)["holds"] is None


def test_the_held_out_snapshot_counts_dead_and_rare_latents_by_the_criteria():
    sae = build_sae(sae_config("relu", dict_size=4, l1=0.1))
    sae.W_enc.zero_()
    sae.b_dec.zero_()
    sae.W_dec.copy_(torch.eye(4, 16))
    sae.b_enc.copy_(torch.tensor([-1.0, -1.0, -1.0, -1.0]))
    x = torch.zeros(100, 16)
    x[:, 0] = 2.0  # latent 0 fires on every row, strongly
    x[:3, 1] = 2.0  # latent 1 fires on 3 rows only
    x[:, 2] = 1.01  # latent 2 fires everywhere, but at 0.01: a tiny contribution
    sae.W_enc.copy_(torch.eye(4, 16))
    snap = heldout_snapshot(sae, x, min_firings=5, min_contribution=0.05)
    assert (snap.dead, snap.rare) == (1, 2)
    assert snap.dead_mask.tolist() == [False, False, False, True]
    assert snap.dead_or_rare_mask.tolist() == [False, True, True, True]


def test_a_pipeline_run_reports_the_doubling_test(tmp_path):
    from tests.text_builders import SMALLEST_PIPELINE, brown_jsonl
    from training.experiments.pipeline import run_pipeline

    metrics = run_pipeline(SMALLEST_PIPELINE, tmp_path / "run", brown_jsonl(tmp_path), progress=False)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["doubling"]["saes_judged"] == len(metrics["runs"]) == 2
    for record in saved["runs"]:
        assert isinstance(record["holds"], bool)
        assert record["doubling"]["half"].keys() >= {"fvu", "l0", "dead", "rare"}
        assert all(m["metric"] in record["doubling"]["compared"] for m in record["moved"])
    assert saved["feature_count_estimate"]["holds"] == saved["doubling"]["estimates"]["value"]["holds"]
    assert (tmp_path / "run" / "saes" / "half" / "relu_n32_l10.03" / "sae.safetensors").exists()


def test_a_sweep_of_one_dictionary_size_runs_end_to_end_and_judges_its_sae(tmp_path):
    from tests.text_builders import SMALLEST_PIPELINE, brown_jsonl
    from training.experiments.pipeline import run_pipeline

    config = SMALLEST_PIPELINE.model_copy(update={"dict_sizes": [32]})
    metrics = run_pipeline(config, tmp_path / "run", brown_jsonl(tmp_path), progress=False)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [r["dict_size"] for r in saved["runs"]] == [32]
    assert isinstance(saved["runs"][0]["holds"], bool)
    # One size gives no MMCS-with-larger curve, so the estimate is absent and unjudged, not an error.
    assert saved["feature_count_estimate"]["value"] is None
    assert saved["doubling"]["estimates"]["value"]["holds"] is None
    assert saved["doubling"]["estimates"]["from_dead_fraction"] == {}
    assert metrics["runs"][0]["name"] == "relu_n32_l10.03"
    # The stages trained here say how many threads they had and whether a busy machine cut them.
    assert {"lm", "sae_sweep"} <= saved["threads"].keys()
    assert saved["threads"]["sae_sweep"]["cores"] >= 1 and saved["threads"]["sae_sweep"]["fewest_threads"] >= 1


def test_a_pipeline_run_draws_its_toy_twin_beside_the_lm(tmp_path):
    from tests.text_builders import SMALLEST_PIPELINE, brown_jsonl
    from training.experiments.pipeline import run_pipeline

    metrics = run_pipeline(SMALLEST_PIPELINE, tmp_path / "run", brown_jsonl(tmp_path), progress=False)
    twin = metrics["toy_vs_lm"]
    assert twin["toy"]["dim"] == 64 and 64 <= twin["toy"]["n_features"] <= 4096
    assert set(twin["rank_correlations"]) == {"mmcs_with_larger", "dead_fraction", "fvu"}
    assert twin["toy_saes_judged"] == 2
    assert (tmp_path / "run" / "figures" / "toy_vs_lm.png").stat().st_size > 10_000
    toy = json.loads((tmp_path / "run" / "toy_twin" / "metrics.json").read_text())
    assert {r["dict_size"] for r in toy["runs"]} == set(SMALLEST_PIPELINE.dict_sizes)
    assert all(isinstance(r["holds"], bool) for r in toy["runs"])


def test_a_sweep_that_still_moves_is_trained_again_on_twice_the_rows_and_resumes(tmp_path):
    from tests.text_builders import SMALLEST_PIPELINE, brown_jsonl
    from training.experiments.pipeline import run_pipeline

    config = SMALLEST_PIPELINE.model_copy(update={"sae_samples": 2048, "max_sae_samples": 4096})
    workdir = tmp_path / "run"
    metrics = run_pipeline(config, workdir, brown_jsonl(tmp_path), progress=False)
    rounds = metrics["doubling_rounds"]
    # Four steps of 512 rows are far from enough: the first round moves, so the sweep is trained again.
    assert rounds[0]["samples"] == 2048 and rounds[0]["moving"]
    assert len(rounds) == 2 and rounds[1]["samples"] == 4096
    assert (workdir / "saes_rows_2048" / "doubling_round.json").exists()
    assert rounds[1]["hit_cap"] == rounds[1]["moving"]
    # The second round is judged against the first round's complete run on half the rows.
    assert "complete run of its own" in metrics["doubling"]["basis"]
    trained = json.loads((workdir / "saes" / "saes" / "relu_n32_l10.03" / "config.json").read_text())
    assert trained["samples"] == 4096
    again = run_pipeline(config, workdir, brown_jsonl(tmp_path), progress=False)
    assert again["doubling_rounds"] == rounds
    assert [r["fvu"] for r in again["runs"]] == [r["fvu"] for r in metrics["runs"]]


def test_a_run_is_recorded_without_weights_and_with_every_verdict(tmp_path, capsys):
    from app.cli.commands import main
    from tests.text_builders import SMALLEST_PIPELINE, brown_jsonl
    from training.experiments.pipeline import run_pipeline

    run_pipeline(SMALLEST_PIPELINE, tmp_path / "run", brown_jsonl(tmp_path), progress=False)
    out = tmp_path / "record"
    assert main(["record", "--workdir", str(tmp_path / "run"), "--out", str(out)]) == 0
    record = json.loads((out / "record.json").read_text())
    assert record["command"].startswith("monosemantic run --preset smallest")
    assert len(record["commit"]) >= 7 and record["machine"]["cpu_cores"] >= 1
    assert record["lm"]["val_loss"] > 0 and record["lm"]["bigram_loss"] > 0
    assert record["lm"]["init"] == "fan_in" and record["lm"]["seed"] == 0
    usage = record["lm"]["mlp_usage"]
    assert usage["layer"] == SMALLEST_PIPELINE.layer and usage["neurons"] == 64
    assert {s["name"] for s in record["saes"]} == {"relu_n16_l10.03", "relu_n32_l10.03"}
    assert all(isinstance(s["holds"], bool) and s["rows"] == SMALLEST_PIPELINE.sae_samples for s in record["saes"])
    assert record["estimates"][0]["holds"] in (True, False)
    # One pair of sizes cannot show the count levelling off: the record says it is a lower bound.
    assert list(record["estimates"][0]["curve"]) == ["16-32"] and record["estimates"][0]["peak_at_largest_pair"]
    assert not list(out.glob("*.safetensors")) and (out / "toy_vs_lm.png").exists()
    text = (out / "README.md").read_text()
    assert "SAEs hold when their rows double" in text and "relu_n32_l10.03" in text
    assert "still rising at the largest pair of sizes: a lower bound" in text
    assert f"{usage['live_neurons']} of 64 neurons live" in text
    with pytest.raises(SystemExit):
        main(["record", "--workdir", str(tmp_path), "--out", str(out)])
    assert "has no metrics.json" in capsys.readouterr().err


def test_a_records_default_command_names_a_recipe_that_is_not_the_default():
    from app.cli.record import run_command

    workdir = Path("runs/study v6")
    assert run_command({"preset": "study", "config": {"recipe": "v5"}}, workdir) == (
        "monosemantic run --preset study --workdir 'runs/study v6'"
    )
    assert run_command({"preset": "study", "config": {"recipe": "v6"}}, workdir).endswith(" --recipe v6")
    assert run_command({}, Path("runs/x")) == "monosemantic run --preset default --workdir runs/x"
