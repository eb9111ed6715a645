"""Dead, rare and alive counts of a run's indexed dictionaries, written into its ``metrics.json`` and figures.

Runs after the feature index: every dictionary's record in ``runs`` gains ``evidence`` ({"dead", "rare",
"alive"}), ``rare`` and ``dead_or_rare_fraction``; the top level gains ``evidence_criteria``; and the
feature count's dead-neuron view (``feature_count_estimate.from_dead_fraction``) counts dead + rare latents
as not there, since a latent that fired a handful of times at a tiny value is no feature of the layer.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch

from training.analysis.metrics import SizedDictionary, alive_count_estimate
from training.features.evidence import count_evidence
from training.features.index import FeatureIndexConfig, feature_index_folders, index_evidence, load_feature_index
from training.figures.sweep import plot_heatmap

DEAD_VIEW_COUNTS = "dead + rare latents (too little evidence on the index corpus) count as dead"


def add_evidence(metrics: dict, run_dir: Path, config: FeatureIndexConfig, figures: Path | None = None) -> dict:
    """metrics with the evidence counts of every indexed dictionary of run_dir added (in place, and returned)."""
    by_name = {record["name"]: record for record in metrics.get("runs", [])}
    sweeps: dict[str, list[SizedDictionary]] = defaultdict(list)
    for folder in feature_index_folders(run_dir):
        index = load_feature_index(folder)
        meta = index.meta
        levels = index_evidence(index)
        counts = count_evidence(levels)
        record = by_name.get(meta.sae_name)
        if record is not None:
            record["evidence"] = counts.as_dict()
            record["rare"] = counts.rare
            record["dead_or_rare_fraction"] = (counts.dead + counts.rare) / max(meta.dict_size, 1)
        sweeps[f"{meta.arch} {meta.sparsity_value:g}"].append(
            SizedDictionary(meta.dict_size, torch.empty(0), torch.from_numpy(levels != "alive"))
        )
    criteria = config.evidence
    metrics["evidence_criteria"] = {
        "min_firings": criteria.min_firings,
        "min_contribution": criteria.min_contribution,
        "description": criteria.describe(),
    }
    estimate = metrics.get("feature_count_estimate")
    if isinstance(estimate, dict) and "from_dead_fraction" in estimate:
        estimate["from_dead_fraction"] = [
            alive_count_estimate(name, sorted(sweep, key=lambda d: d.dict_size))
            for name, sweep in sweeps.items()
            if len(sweep) >= 2
        ]
        estimate["from_dead_fraction_counts"] = DEAD_VIEW_COUNTS
        judged = ((metrics.get("doubling") or {}).get("estimates") or {}).get("from_dead_fraction", {})
        for entry in estimate["from_dead_fraction"]:
            if entry["sweep"] in judged:
                entry["holds"] = judged[entry["sweep"]]["holds"]
    if figures is not None:
        records = [r for r in metrics.get("runs", []) if "dead_or_rare_fraction" in r]
        for arch in sorted({r["arch"] for r in records}):
            plot_heatmap(records, "dead_or_rare_fraction", arch, figures / f"heatmap_dead_or_rare_fraction_{arch}.png")
    return metrics


def update_run_metrics(run_dir: Path, config: FeatureIndexConfig) -> dict | None:
    """Add the evidence counts to ``<run_dir>/metrics.json`` and its figures; None when the run has no metrics."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    add_evidence(metrics, Path(run_dir), config, Path(run_dir) / "figures")
    path.write_text(json.dumps(metrics, indent=2))
    return metrics
