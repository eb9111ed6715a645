"""Figures render from plain records, including a sweep of one size or one sparsity."""

from __future__ import annotations

from pathlib import Path

from training.figures.sweep import plot_mmcs_vs_samples, write_figures


def _run(arch: str, size: int, key: str, value: float) -> dict:
    return {"arch": arch, "dict_size": size, key: value, "mmcs": 0.9, "l0": 5.0, "fvu": 0.004, "dead_fraction": 0.0}


def test_single_size_and_single_sparsity(tmp_path: Path) -> None:
    metrics = {
        "runs": [_run("relu", 64, "l1", 0.01), _run("relu", 64, "l1", 0.1), _run("topk", 32, "k", 4)],
        "mmcs_with_larger": [],
        "feature_count_estimate": {"value": None, "low": None, "high": None, "method": "n/a"},
        "true_feature_count": 64,
    }
    written = write_figures(metrics, tmp_path)
    names = {p.name for p in written}
    assert {"heatmap_mmcs_relu.png", "heatmap_fvu_topk.png", "heatmap_dead_fraction_topk.png"} <= names
    assert "mmcs_with_larger.png" in names
    assert all(p.stat().st_size > 0 for p in written)


def test_training_curves_need_mmcs(tmp_path: Path) -> None:
    log = [{"run": "a", "samples": s, "mmcs": s / 10} for s in (1, 2, 3)]
    assert plot_mmcs_vs_samples(log, tmp_path / "curve.png") == tmp_path / "curve.png"
    assert plot_mmcs_vs_samples([{"run": "a", "samples": 1}], tmp_path / "none.png") is None


def test_rank_correlations_of_toy_and_lm_heatmaps():
    from training.figures.toy_vs_lm import rank_correlations

    def run(size: int, l1: float, fvu: float, dead: float) -> dict:
        return {"arch": "relu", "dict_size": size, "l1": l1, "fvu": fvu, "dead_fraction": dead, "name": f"{size}{l1}"}

    toy = {"runs": [run(n, l1, 1 / n + l1, n / 1000) for n in (32, 64, 128) for l1 in (0.1, 0.3)]}
    lm = {"runs": [run(n, l1, 2 / n + l1, 1 - n / 1000) for n in (32, 64, 128) for l1 in (0.1, 0.3)]}
    rho = rank_correlations(toy, lm)
    assert rho["fvu"] == 1.0 and rho["dead_fraction"] == -1.0 and rho["mmcs_with_larger"] is None
