"""PNG figures of a sweep, drawn from plain records (the dicts of metrics.json and train_log.jsonl).

Figures are made with matplotlib's object interface on the Agg canvas, so no pyplot global state or
display is involved and they can be drawn from any thread.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

HEATMAP_METRICS: dict[str, tuple[str, str, float | None, float | None]] = {
    "mmcs": ("MMCS vs ground truth", "viridis", 0.0, 1.0),
    "dead_fraction": ("dead fraction", "magma", 0.0, 1.0),
    "dead_or_rare_fraction": ("dead + rare fraction (too little evidence on the index corpus)", "magma", 0.0, 1.0),
    "fvu": ("reconstruction loss (FVU)", "viridis_r", 0.0, None),
}


def sparsity_key(record: dict) -> str:
    """Which sparsity setting a record carries: "k" for the top-k family, else "l1"."""
    return "k" if record.get("k") is not None else "l1"


def _sparsity_label(key: str, value: float) -> str:
    return f"{key}={value:g}"


def _size_label(size: int) -> str:
    exponent = math.log2(size)
    shown = f"{exponent:.0f}" if exponent.is_integer() else f"{exponent:.2f}"
    return f"$2^{{{shown}}}$\n{size}"


def _cell_text(value: float) -> str:
    return f"{value:.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.0e}"


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


def plot_heatmap(runs: list[dict], metric: str, arch: str, path: Path) -> Path:
    """Heatmap of ``metric`` over dictionary size (x) and sparsity setting (y) for one arch, values annotated."""
    title, cmap, vmin, vmax = HEATMAP_METRICS.get(metric, (metric, "viridis", None, None))
    rows = [r for r in runs if r["arch"] == arch]
    if not rows:
        raise ValueError(f"no runs of arch {arch!r} to plot")
    key = sparsity_key(rows[0])
    sizes = sorted({int(r["dict_size"]) for r in rows})
    settings = sorted({r[key] for r in rows})
    grid = np.full((len(settings), len(sizes)), np.nan)
    moving = np.zeros(grid.shape, dtype=bool)
    for r in rows:
        value = r.get(metric)
        if value is not None:
            grid[settings.index(r[key]), sizes.index(int(r["dict_size"]))] = value
        moving[settings.index(r[key]), sizes.index(int(r["dict_size"]))] = r.get("holds") is False
    finite = grid[np.isfinite(grid)]
    low = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    high = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    norm = Normalize(low, high if high > low else low + 1e-9)

    fig = new_figure(2.2 + 1.0 * len(sizes), 1.6 + 0.55 * len(settings))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto", origin="lower")
    colormap = image.get_cmap()
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            red, green, blue, _ = colormap(norm(value))
            ink = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
            text = _cell_text(value) + ("*" if moving[i, j] else "")
            ax.text(j, i, text, ha="center", va="center", color=ink, fontsize=8)
    ax.set_xticks(range(len(sizes)), [_size_label(s) for s in sizes], fontsize=8)
    ax.set_yticks(range(len(settings)), [f"{s:g}" for s in settings], fontsize=8)
    ax.set_xlabel("dictionary size")
    ax.set_ylabel(key)
    note = " (* still moving when the rows double)" if moving.any() else ""
    ax.set_title(f"{title}: {arch}{note}", fontsize=10)
    fig.colorbar(image, ax=ax)
    return save_figure(fig, path)


def write_heatmaps(runs: list[dict], folder: Path) -> list[Path]:
    """``heatmap_<metric>_<arch>.png`` in folder for MMCS, dead fraction and FVU, for every arch present.

    Runs told apart by a ``tag`` (e.g. their init scheme) get one heatmap per tag, ``..._<arch>_<tag>.png``.
    """
    groups = sorted({(r["arch"], r.get("tag") or "") for r in runs})
    written = []
    for arch, tag in groups:
        rows = [r for r in runs if (r.get("tag") or "") == tag]
        suffix = f"_{tag}" if tag else ""
        written += [
            plot_heatmap(rows, metric, arch, folder / f"heatmap_{metric}_{arch}{suffix}.png")
            for metric in HEATMAP_METRICS
            if any(r.get(metric) is not None for r in rows if r["arch"] == arch)
        ]
    return written


def plot_mmcs_with_larger(
    records: list[dict], path: Path, true_feature_count: int | None = None, estimate: dict | None = None
) -> Path:
    """MMCS of each dictionary with the next larger one against dictionary size, one line per arch+sparsity.

    Marks the true number of features and the estimate (with its low-high band) when given.
    """
    lines: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for r in records:
        key = sparsity_key(r)
        setting = _sparsity_label(key, r[key]) + (f" init={r['init']}" if r.get("init") else "")
        lines[(r["arch"], setting)].append((int(r["dict_size"]), r["mmcs_with_larger"]))
    fig = new_figure(7.0, 4.2)
    ax = fig.add_subplot()
    for (arch, setting), points in sorted(lines.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"{arch} {setting}")
    if estimate and estimate.get("value") is not None:
        ax.axvline(estimate["value"], color="tab:red", linestyle="--", label=f"estimate {estimate['value']}")
        if estimate.get("low") is not None and estimate.get("high") is not None:
            ax.axvspan(estimate["low"], max(estimate["high"], estimate["low"] + 1e-9), color="tab:red", alpha=0.1)
    if true_feature_count is not None:
        ax.axvline(true_feature_count, color="black", linestyle=":", label=f"true G = {true_feature_count}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("dictionary size (log2)")
    ax.set_ylabel("MMCS with next larger dictionary")
    ax.set_ylim(0, 1.02)
    ax.set_title("MMCS with larger dictionaries", fontsize=10)
    ax.grid(alpha=0.3)
    if lines or true_feature_count is not None:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save_figure(fig, path)


def read_train_log(path: Path) -> list[dict]:
    """The records of a train_log.jsonl file (empty when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


CURVE_LABELS = {
    "mmcs": "MMCS vs ground truth",
    "fvu": "FVU (training batch)",
    "l0": "L0 (training batch)",
    "dead_fraction": "dead fraction (silent for dead_after samples)",
}


def plot_training_curve(log: Iterable[dict], metric: str, path: Path, log_y: bool = False) -> Path | None:
    """``metric`` of train_log.jsonl against training samples, one line per run; None when never logged."""
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for line in log:
        if line.get(metric) is not None:
            curves[line["run"]].append((int(line["samples"]), float(line[metric])))
    if not curves:
        return None
    fig = new_figure(7.5, 4.2)
    ax = fig.add_subplot()
    styles = ["-", "--", ":", "-."]
    for i, (name, points) in enumerate(curves.items()):
        points.sort()
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            color=f"C{i % 10}",
            linestyle=styles[(i // 10) % 4],
            linewidth=1.2,
            label=name,
        )
    label = CURVE_LABELS.get(metric, metric)
    ax.set_xlabel("training samples")
    ax.set_ylabel(label)
    if log_y:
        ax.set_yscale("log")
    elif metric in ("mmcs", "dead_fraction"):
        ax.set_ylim(0, 1.02)
    ax.set_title(f"{label} over training", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=1 + len(curves) // 24)
    return save_figure(fig, path)


def plot_mmcs_vs_samples(log: Iterable[dict], path: Path) -> Path | None:
    """MMCS vs training samples, one line per run of the log; None (no file) when the log has no MMCS."""
    return plot_training_curve(log, "mmcs", path)


def write_figures(metrics: dict, folder: Path, train_log: Path | None = None) -> list[Path]:
    """Every figure of a metrics.json dict (and of its train log, if given) as PNGs in folder."""
    written = write_heatmaps(metrics.get("runs", []), folder)
    written.append(
        plot_mmcs_with_larger(
            metrics.get("mmcs_with_larger", []),
            folder / "mmcs_with_larger.png",
            metrics.get("true_feature_count"),
            metrics.get("feature_count_estimate"),
        )
    )
    if train_log is not None:
        curve = plot_mmcs_vs_samples(read_train_log(train_log), folder / "mmcs_vs_samples.png")
        if curve is not None:
            written.append(curve)
    return written


def _sweep_of(run: str) -> str:
    """The sweep a run belongs to: its name without the dictionary size (``relu_n512_l10.3``: ``relu l1=0.3``)."""
    parts = [p for p in run.split("_") if not (p.startswith("n") and p[1:].isdigit())]
    head, rest = parts[0], parts[1:]
    settings = [f"{p[:2]}={p[2:]}" if p.startswith("l1") else f"{p[0]}={p[1:]}" for p in rest[:1]]
    return " ".join([head, *settings, *rest[1:]])


def plot_heldout_objective(log: Iterable[dict], path: Path, decay_start: float | None = None) -> Path | None:
    """Each SAE's objective on fixed held-out rows over training, relative to its final value: one panel
    per sweep, one line per dictionary size; a curve that is flat before the decay has converged."""
    curves: dict[str, dict[str, list[tuple[int, float, float]]]] = defaultdict(lambda: defaultdict(list))
    for line in log:
        point = (int(line["samples"]), float(line["fraction"]), float(line["objective"]))
        curves[_sweep_of(line["run"])][line["run"]].append(point)
    if not curves:
        return None
    fig = new_figure(4.2 * len(curves), 3.6)
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, (sweep, runs) in zip(axes, sorted(curves.items()), strict=True):
        for i, (name, points) in enumerate(sorted(runs.items(), key=lambda item: _run_size(item[0]))):
            points.sort()
            final = points[-1][2]
            ax.plot(
                [p[0] for p in points],
                [p[2] / final for p in points],
                color=f"C{i % 10}",
                linewidth=1.2,
                marker=".",
                markersize=3,
                label=str(_run_size(name)),
            )
            if decay_start is not None and i == 0:
                start = min(points, key=lambda p: abs(p[1] - decay_start))
                ax.axvline(start[0], color="0.5", linestyle=":", linewidth=1)
        ax.set_ylim(0.95, 1.5)
        ax.set_xlabel("training samples")
        ax.set_title(sweep, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, title="latents", title_fontsize=6, loc="upper right")
    axes[0].set_ylabel("held-out objective / final value")
    return save_figure(fig, path)


def _run_size(run: str) -> int:
    sizes = [int(p[1:]) for p in run.split("_") if p.startswith("n") and p[1:].isdigit()]
    return sizes[0] if sizes else 0
