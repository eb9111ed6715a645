"""The LM run's toy twin: toy data of the LM site's width and about as many features as the LM seems to have.

The study compares plots of the LM with plots of toy data. The twin makes that comparison exact in form:
the same dictionary sizes and relu sparsity grid as the LM sweep, toy dimension d equal to the LM site's
width, and G near the LM's feature-count estimate (clamped to 64..4096; 512 when the LM gives none). It
goes through the doubling test like the LM sweep, and ``figures/toy_vs_lm.png`` sets the two side by side
with the rank correlation of each pair of heatmaps.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from training.data.toy import ToyConfig, ToyData
from training.experiments.doubling_report import add_doubling
from training.experiments.toy_experiment import ToyExperimentConfig, run_toy_experiment
from training.figures.toy_vs_lm import plot_toy_vs_lm, rank_correlations
from training.saes import load_sae

TWIN_DIR = "toy_twin"
FIGURE = "toy_vs_lm.png"
DEFAULT_FEATURES = 512


def twin_feature_count(lm_metrics: dict) -> int:
    """G for the twin: the LM's stable-atom estimate, clamped to 64..4096 (512 without one)."""
    value = (lm_metrics.get("feature_count_estimate") or {}).get("value")
    return int(min(max(round(value), 64), 4096)) if value else DEFAULT_FEATURES


def run_toy_twin(
    lm_metrics: dict,
    d_in: int,
    dict_sizes: list[int],
    l1: list[float],
    samples: int,
    workdir: Path,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> dict:
    """Train and test the twin into ``workdir/toy_twin``, draw the side-by-side figure; the record of both."""
    out = Path(workdir) / TWIN_DIR
    features = twin_feature_count(lm_metrics)
    config = ToyExperimentConfig(
        toy=ToyConfig(dim=d_in, n_features=features),
        dict_sizes=dict_sizes,
        arch="relu",
        l1=l1,
        samples=samples,
        eval_samples=5_000,
    )
    if (out / "metrics.json").exists() and json.loads((out / "metrics.json").read_text()).get("config") != json.loads(
        config.model_dump_json()
    ):
        shutil.rmtree(out)  # derived from the LM run's estimate: a new estimate means a new twin
    toy_metrics = run_toy_experiment(config, out, progress, device)
    saes = {r["name"]: load_sae(out / "sweep" / "saes" / r["name"]) for r in toy_metrics["runs"]}
    held_out = ToyData(config.toy).evaluation_set(config.eval_samples)
    add_doubling(toy_metrics, out / "sweep", saes, held_out, index_rows=held_out.shape[0])
    (out / "metrics.json").write_text(json.dumps(toy_metrics, indent=2))
    layer = lm_metrics.get("layer")
    plot_toy_vs_lm(
        toy_metrics,
        lm_metrics,
        Path(workdir) / "figures" / FIGURE,
        f"toy d={d_in}, G={features}",
        f"LM layer {layer} MLP" if layer is not None else "LM",
    )
    doubling = toy_metrics.get("doubling") or {}
    return {
        "toy": {"dim": d_in, "n_features": features, "samples": samples, "folder": TWIN_DIR},
        "rank_correlations": rank_correlations(toy_metrics, lm_metrics),
        "toy_saes_holding": doubling.get("saes_holding"),
        "toy_saes_judged": doubling.get("saes_judged"),
        "toy_mmcs": {r["name"]: r.get("mmcs") for r in toy_metrics["runs"]},
        "figure": f"figures/{FIGURE}",
    }
