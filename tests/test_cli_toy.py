"""``monosemantic toy`` against its contract in DESIGN.md: usage errors, and the metrics.json of a tiny run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli.commands import main
from training.analysis.metrics import mmcs
from training.data.toy import ToyConfig, ToyData
from training.saes import load_sae

REPO = Path(__file__).resolve().parents[1]
TINY_DATA = ["--dim", "16", "--features", "32", "--samples", "20000"]
RUN_KEYS = {"arch", "dict_size", "mmcs", "l0", "fvu", "dead_fraction", "samples_per_s"}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``main(argv)``, whether it returns or raises SystemExit."""
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


BAD_ARGUMENTS = {
    "unknown-arch": ["--arch", "gated"],
    "dict-size-zero": ["--dict-sizes", "0"],
    "dict-size-zero-in-list": ["--dict-sizes", "16,0,32"],
    "dict-size-negative": ["--dict-sizes=-8,16"],
    "dict-size-negative-alone": ["--dict-sizes", "-16"],
    "k-above-dict-size": ["--arch", "topk", "--k", "40", "--dict-sizes", "16,32"],
    "k-above-smallest-dict-size": ["--arch", "batchtopk", "--k", "20", "--dict-sizes", "16,32"],
    "negative-l1": ["--l1=-0.5"],
    "negative-l1-in-list": ["--l1", "0.1,-0.2"],
}


@pytest.mark.parametrize("args", list(BAD_ARGUMENTS.values()), ids=list(BAD_ARGUMENTS))
def test_bad_arguments_exit_2_with_one_error_line(args, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["toy", *TINY_DATA, *args, "--out", str(out)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error" in lines[0]
    assert not (out / "metrics.json").exists()


@pytest.mark.timeout(60)
def test_bad_arguments_through_python_dash_m(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "app", "toy", "--arch", "gated", "--out", str(tmp_path / "out")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and "gated" in lines[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cli") / "toy"
    code = main(["toy", *TINY_DATA, "--dict-sizes", "16,32", "--out", str(out)])
    assert code == 0
    return out, json.loads((out / "metrics.json").read_text())


def test_tiny_run_writes_metrics_with_the_contract_keys(tiny_run):
    _, metrics = tiny_run
    assert {"runs", "mmcs_with_larger", "feature_count_estimate"} <= metrics.keys()
    runs = metrics["runs"]
    assert sorted(run["dict_size"] for run in runs) == [16, 16, 16, 32, 32, 32]
    for run in runs:
        assert RUN_KEYS <= run.keys()
        assert run["arch"] == "relu"
        assert "l1" in run and "k" not in run and run["l1"] >= 0
        assert 0 < run["mmcs"] <= 1
        assert 0 < run["l0"] <= run["dict_size"]
        assert 0 <= run["fvu"] < 1.5
        assert 0 <= run["dead_fraction"] <= 1
        assert run["samples_per_s"] > 0
    assert len({run["l1"] for run in runs}) == 3
    estimate = metrics["feature_count_estimate"]
    assert {"value", "low", "high", "method"} <= estimate.keys()
    assert isinstance(metrics["mmcs_with_larger"], list) and len(metrics["mmcs_with_larger"]) == 3


def test_tiny_run_mmcs_matches_the_saved_dictionaries(tiny_run):
    """The reported MMCS is that of the saved decoder against the toy's true features."""
    out, metrics = tiny_run
    truth = ToyData(ToyConfig(dim=16, n_features=32, seed=0)).features
    saved = {path.parent.name: path.parent for path in (out / "sweep" / "saes").glob("*/sae.safetensors")}
    assert len(saved) == len(metrics["runs"])
    for run in metrics["runs"]:
        sae = load_sae(saved[run["name"]])
        assert sae.config.dict_size == run["dict_size"] and sae.config.l1 == run["l1"]
        assert run["mmcs"] == pytest.approx(mmcs(sae.W_dec, truth), abs=1e-6)
    larger = {(entry["l1"], entry["dict_size"]): entry["mmcs_with_larger"] for entry in metrics["mmcs_with_larger"]}
    assert set(larger) == {(run["l1"], 16) for run in metrics["runs"]}
    assert all(0 < value <= 1 for value in larger.values())


def test_tiny_topk_run_reports_k(tmp_path, capsys):
    code, out_text, _ = run_cli(
        [
            "toy",
            "--dim",
            "8",
            "--features",
            "16",
            "--samples",
            "4096",
            "--arch",
            "topk",
            "--k",
            "3",
            "--dict-sizes",
            "8,16",
            "--no-progress",
            "--out",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [(run["arch"], run["k"], run["dict_size"]) for run in metrics["runs"]] == [("topk", 3, 8), ("topk", 3, 16)]
    assert all("l1" not in run for run in metrics["runs"])
    assert all(run["l0"] <= 3 + 1e-9 for run in metrics["runs"])
    assert "metrics.json" in out_text
