"""The monosemantic command line: one-line argument errors and a tiny end-to-end toy run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli.commands import main

TINY = ["--dim", "8", "--features", "16", "--samples", "4096", "--batch-size", "256", "--eval-samples", "2000"]


@pytest.mark.parametrize(
    "args",
    [
        ["--arch", "nope"],
        ["--dict-sizes", "0,8"],
        ["--dict-sizes", "8,x"],
        ["--dict-sizes", "2.5"],
        ["--arch", "topk", "--k", "9", "--dict-sizes", "8,16"],
        ["--arch", "topk", "--k", "0"],
        ["--l1", "-0.1"],
        ["--arch", "topk", "--l1", "0.1"],
        ["--arch", "relu", "--k", "3"],
        ["--samples", "0"],
        ["--dim", "0"],
        ["--features", "-3"],
        ["--decay", "1.5"],
        ["--unknown-flag"],
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["toy", "--out", str(tmp_path / "out"), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("monosemantic toy: error: ")
    assert not (tmp_path / "out").exists()


def test_help_lists_subcommands(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "toy" in capsys.readouterr().out


def test_toy_writes_metrics_and_figures_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "toy"
    argv = ["toy", *TINY, "--dict-sizes", "8,16", "--l1", "0.01,0.1", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "relu_n8_l10.01" in printed and str(out / "metrics.json") in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"runs", "mmcs_with_larger", "feature_count_estimate", "config", "true_feature_count"} <= set(metrics)
    assert len(metrics["runs"]) == 4
    for run in metrics["runs"]:
        assert {"arch", "dict_size", "l1", "mmcs", "l0", "fvu", "dead_fraction", "samples_per_s"} <= set(run)
        assert run["samples_per_s"] > 0
    assert [r["larger_size"] for r in metrics["mmcs_with_larger"]] == [16, 16]
    assert {"value", "low", "high", "method"} <= set(metrics["feature_count_estimate"])
    assert metrics["true_feature_count"] == 16
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert {"heatmap_mmcs_relu.png", "mmcs_with_larger.png", "mmcs_vs_samples.png"} <= figures

    assert main(argv) == 0
    assert json.loads((out / "metrics.json").read_text())["runs"][0]["mmcs"] == metrics["runs"][0]["mmcs"]


def test_existing_output_with_other_settings_is_a_runtime_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "toy")
    base = ["toy", *TINY, "--out", out, "--no-progress", "--arch", "topk", "--k", "2"]
    assert main([*base, "--dict-sizes", "8"]) == 0
    capsys.readouterr()
    assert main([*base, "--dict-sizes", "16"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different settings" in err
