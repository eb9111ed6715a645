"""The study's plots in one form for toy data and the LM: heatmaps over dictionary size x sparsity, side by side.

The study's claim is that, once SAEs are trained long enough, the LM's plots "look much more similar" to
the toy data's. Both runs are drawn as the same three heatmaps (MMCS with the next larger dictionary, dead
fraction, FVU) over the same sizes and sparsities, each panel titled with how many of its SAEs hold
under the doubling test, and the similarity is put in numbers: the rank correlation of each pair of
heatmaps over the cells both runs have.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.colors import Normalize
from scipy.stats import spearmanr

from training.figures.sweep import new_figure, save_figure

METRICS = (
    ("mmcs_with_larger", "MMCS with next larger", "viridis", 0.0, 1.0),
    ("dead_fraction", "dead fraction", "magma", 0.0, 1.0),
    ("fvu", "FVU", "viridis_r", None, None),
)


def heatmap_grid(metrics: dict, metric: str, arch: str = "relu") -> tuple[list[int], list[float], np.ndarray]:
    """``metric`` of one arch's runs as a (sparsity x size) grid, NaN where a run has no value."""
    runs = [r for r in metrics.get("runs", []) if r["arch"] == arch]
    key = "k" if arch in ("topk", "batchtopk") else "l1"
    sizes = sorted({int(r["dict_size"]) for r in runs})
    settings = sorted({float(r[key]) for r in runs})
    grid = np.full((len(settings), len(sizes)), np.nan)
    if metric == "mmcs_with_larger":
        values = {
            (float(r[key]), int(r["dict_size"])): r["mmcs_with_larger"]
            for r in metrics.get("mmcs_with_larger", [])
            if r.get("arch") == arch and r.get(key) is not None
        }
    else:
        values = {(float(r[key]), int(r["dict_size"])): r.get(metric) for r in runs}
    for (setting, size), value in values.items():
        if value is not None and setting in settings and size in sizes:
            grid[settings.index(setting), sizes.index(size)] = value
    return sizes, settings, grid


def rank_correlations(toy: dict, lm: dict, arch: str = "relu") -> dict[str, float | None]:
    """Spearman's rank correlation of each pair of heatmaps over the cells both runs have (None if < 3)."""
    result: dict[str, float | None] = {}
    for metric, *_ in METRICS:
        toy_sizes, toy_settings, toy_grid = heatmap_grid(toy, metric, arch)
        lm_sizes, lm_settings, lm_grid = heatmap_grid(lm, metric, arch)
        pairs = [
            (toy_grid[toy_settings.index(s), toy_sizes.index(n)], lm_grid[lm_settings.index(s), lm_sizes.index(n)])
            for s in set(toy_settings) & set(lm_settings)
            for n in set(toy_sizes) & set(lm_sizes)
        ]
        pairs = [(a, b) for a, b in pairs if np.isfinite(a) and np.isfinite(b)]
        if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
            result[metric] = None
            continue
        rho = spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic
        result[metric] = float(rho)
    return result


def holding_label(metrics: dict) -> str:
    """ "k of n SAEs hold when the rows double", or that the run kept no half-rows copies."""
    doubling = metrics.get("doubling") or {}
    if not doubling.get("saes_judged"):
        return "doubling test: not run"
    return f"{doubling['saes_holding']} of {doubling['saes_judged']} SAEs hold when the rows double"


def plot_toy_vs_lm(toy: dict, lm: dict, path: Path, toy_title: str, lm_title: str, arch: str = "relu") -> Path:
    """Two rows of three heatmaps (toy above, LM below), each row titled with its doubling badge."""
    correlations = rank_correlations(toy, lm, arch)
    fig = new_figure(13.0, 7.0)
    axes = fig.subplots(2, len(METRICS))
    for row, (metrics, title) in enumerate(((toy, toy_title), (lm, lm_title))):
        for col, (metric, label, cmap, vmin, vmax) in enumerate(METRICS):
            ax = axes[row, col]
            sizes, settings, grid = heatmap_grid(metrics, metric, arch)
            finite = grid[np.isfinite(grid)]
            low = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
            high = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
            norm = Normalize(low, high if high > low else low + 1e-9)
            image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto", origin="lower")
            for (i, j), value in np.ndenumerate(grid):
                if np.isfinite(value):
                    red, green, blue, _ = image.get_cmap()(norm(value))
                    ink = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color=ink)
            ax.set_xticks(range(len(sizes)), [str(s) for s in sizes], fontsize=7, rotation=45)
            ax.set_yticks(range(len(settings)), [f"{s:g}" for s in settings], fontsize=7)
            rho = correlations[metric]
            suffix = f" (rank corr. {rho:.2f})" if row == 1 and rho is not None else ""
            ax.set_title(f"{label}{suffix}", fontsize=9)
            if col == 0:
                ax.set_ylabel(f"{title}\nl1" if arch == "relu" else f"{title}\nk", fontsize=8)
        axes[row, 0].annotate(
            holding_label(metrics), (0, 1.18), xycoords="axes fraction", fontsize=9, fontweight="bold"
        )
    fig.tight_layout()
    return save_figure(fig, path)
