"""The doubling test of a finished sweep, written into its metrics: which SAEs and estimates hold.

Each SAE saved at half its rows (``<sweep>/half/``) and at the end is measured on the same held-out rows
(``training.analysis.doubling``); the MMCS-with-larger curve and the feature-count estimates are computed
for both and compared. Every run record gets ``holds`` and ``moved``; the estimates get ``holds``; and
``metrics["doubling"]`` keeps the tolerances, the half-rows numbers and the basis of the comparison.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch

from training.analysis.doubling import (
    TOLERANCES,
    estimate_doubling,
    heldout_min_firings,
    heldout_snapshot,
    sae_doubling,
)
from training.analysis.metrics import SizedDictionary, feature_count_estimate, mmcs_with_larger
from training.features.evidence import DEFAULT_MIN_CONTRIBUTION, DEFAULT_MIN_FIRINGS
from training.figures.sweep import plot_heatmap
from training.saes import SparseAutoencoder, load_sae
from training.sweeps.trainer import HALF_DIR

BASIS = (
    "each SAE at half its rows (the same run, before its learning rate decays) against the end, on the same "
    "held-out rows; dead and rare are judged on those rows with the index's evidence criteria scaled to them"
)
BASIS_COOLDOWN = (
    "each SAE trained on half the rows (a complete run: a branch of the same run that cools down where a run "
    "of half the rows would) against the end, on the same held-out rows; dead and rare as above"
)
BASIS_PREVIOUS_ROUND = (
    "each SAE trained on half the rows (a complete run of its own, learning-rate decay included) against the "
    "same SAE trained on all of them, on the same held-out rows; dead and rare as above"
)


def _sweep_key(sae: SparseAutoencoder) -> str:
    return f"{sae.config.arch} {sae.config.sparsity:g}"


def _mmcs_by_name(saes: dict[str, SparseAutoencoder]) -> dict[str, float]:
    """Each SAE's MMCS with the next larger dictionary of its sweep (absent for the largest)."""
    groups: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for name, sae in saes.items():
        groups[_sweep_key(sae)].append((sae.config.dict_size, name))
    result = {}
    for members in groups.values():
        members.sort()
        for (_, small), (_, large) in zip(members, members[1:], strict=False):
            result[small] = mmcs_with_larger(saes[small].W_dec, saes[large].W_dec)
    return result


def _estimates(saes: dict[str, SparseAutoencoder], dead: dict[str, torch.Tensor]) -> dict:
    sweeps: dict[str, list[SizedDictionary]] = defaultdict(list)
    for name, sae in saes.items():
        sweeps[_sweep_key(sae)].append(SizedDictionary(sae.config.dict_size, sae.W_dec.clone(), dead[name]))
    return feature_count_estimate(sweeps)


def heldout_evidence(
    saes: dict[str, SparseAutoencoder],
    held_out: torch.Tensor,
    min_firings: int,
    min_contribution: float = DEFAULT_MIN_CONTRIBUTION,
) -> tuple[dict[str, dict], dict]:
    """Each SAE's held-out numbers (with its alive count) and the feature-count estimate over the SAEs, on the
    same held-out rows and evidence criteria as the doubling test; for scripts that compare rounds or runs."""
    snapshots = {name: heldout_snapshot(sae, held_out, min_firings, min_contribution) for name, sae in saes.items()}
    per_sae = {
        name: {**snap.numbers(), "alive": saes[name].config.dict_size - snap.dead - snap.rare}
        for name, snap in snapshots.items()
    }
    return per_sae, _estimates(saes, {name: snap.dead_mask for name, snap in snapshots.items()})


def add_doubling(
    metrics: dict,
    sweep_dir: Path,
    end_saes: dict[str, SparseAutoencoder],
    held_out: torch.Tensor,
    index_rows: int,
    min_firings: int = DEFAULT_MIN_FIRINGS,
    min_contribution: float = DEFAULT_MIN_CONTRIBUTION,
    half_dir: Path | None = None,
) -> dict:
    """Add the doubling test to ``metrics`` (in place, and returned); SAEs without a half-rows copy are None.

    ``half_dir`` holds the half-rows SAEs to compare with (default: the sweep's own ``half/`` snapshots);
    a previous complete run on half the rows, where there is one, makes the fairer comparison.
    """
    firings = heldout_min_firings(min_firings, held_out.shape[0], index_rows)
    half_dir = half_dir or sweep_dir / HALF_DIR
    half_saes = {name: load_sae(half_dir / name) for name in end_saes if (half_dir / name / "sae.safetensors").exists()}
    snapshots = {
        side: {name: heldout_snapshot(sae, held_out, firings, min_contribution) for name, sae in saes.items()}
        for side, saes in (("half", half_saes), ("end", {n: end_saes[n] for n in half_saes}))
    }
    mmcs = {"half": _mmcs_by_name(half_saes), "end": _mmcs_by_name({n: end_saes[n] for n in half_saes})}
    records = {record["name"]: record for record in metrics.get("runs", [])}
    for name, record in records.items():
        if name not in half_saes:
            record.update(holds=None, moved=[], doubling=None)
            continue
        sides = {side: {**snapshots[side][name].numbers(), "mmcs_with_larger": mmcs[side].get(name)} for side in mmcs}
        verdict = sae_doubling(sides["half"], sides["end"], end_saes[name].config.dict_size)
        record.update(holds=verdict["holds"], moved=verdict["moved"], doubling={**verdict, **sides})

    estimates: dict = {"value": None, "from_dead_fraction": {}}
    complete = len(half_saes) == len(end_saes) and half_saes
    if complete:
        half = _estimates(half_saes, {n: s.dead_mask for n, s in snapshots["half"].items()})
        end = _estimates(end_saes, {n: s.dead_mask for n, s in snapshots["end"].items()})
        estimates["value"] = estimate_doubling(half["value"], end["value"])
        dead_view = {
            side: {
                entry["sweep"]: entry["value"]
                # A sweep of one size has no estimate, hence no dead-fraction view: nothing to compare.
                for entry in _estimates(saes, {n: s.dead_or_rare_mask for n, s in snapshots[side].items()}).get(
                    "from_dead_fraction", []
                )
            }
            for side, saes in (("half", half_saes), ("end", end_saes))
        }
        for sweep, end_value in dead_view["end"].items():
            estimates["from_dead_fraction"][sweep] = estimate_doubling(dead_view["half"].get(sweep), end_value)
        estimate = metrics.get("feature_count_estimate")
        if isinstance(estimate, dict):
            estimate["holds"] = estimates["value"]["holds"]
            for entry in estimate.get("from_dead_fraction", []):
                entry["holds"] = estimates["from_dead_fraction"].get(entry["sweep"], {}).get("holds")
    judged = [r["holds"] for r in records.values() if r.get("holds") is not None]
    metrics["doubling"] = {
        "tolerances": TOLERANCES.as_dict(),
        "basis": _basis(half_dir, sweep_dir, half_saes),
        "heldout_rows": int(held_out.shape[0]),
        "heldout_min_firings": firings,
        "saes_holding": sum(judged),
        "saes_judged": len(judged),
        "estimates": estimates if complete else None,
    }
    return metrics


def _basis(half_dir: Path, sweep_dir: Path, half_saes: dict[str, SparseAutoencoder]) -> str:
    """How the half-rows SAEs were made, in words: a previous round, a cool-down branch or a snapshot."""
    if half_dir != sweep_dir / HALF_DIR:
        return BASIS_PREVIOUS_ROUND
    metas = [json.loads((half_dir / name / "config.json").read_text()) for name in half_saes]
    return BASIS_COOLDOWN if metas and all("cool_down_from_samples" in m for m in metas) else BASIS


def plot_doubling_heatmaps(runs: list[dict], figures: Path) -> list[Path]:
    """Redraw the run's heatmaps with every still-moving SAE's cell starred."""
    paths = []
    for arch in sorted({r["arch"] for r in runs}):
        for metric in ("dead_fraction", "fvu", "ce_recovered", "dead_or_rare_fraction"):
            if any(r.get(metric) is not None for r in runs if r["arch"] == arch):
                paths.append(plot_heatmap(runs, metric, arch, figures / f"heatmap_{metric}_{arch}.png"))
    return paths
