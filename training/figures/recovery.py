"""PNG figures of recovery order and of initialisation schemes, drawn from plain records.

The inputs are the dicts the toy experiment writes: ``recovery.json`` (``training.sweeps.recovery``), the
``init_comparison`` rows of metrics.json and the lines of train_log.jsonl. Drawn like
``training.figures.sweep``: matplotlib's object interface on the Agg canvas, no pyplot state.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from training.figures.sweep import new_figure, save_figure
from training.sweeps.init_comparison import MMCS_THRESHOLDS

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")
ZOOM_FLOOR = 0.75  # the zoomed panel shows the approach to the thresholds that matter


def _legend(ax, count: int) -> None:
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=1 + count // 24)


def plot_recovery_vs_probability(report: dict, path: Path) -> Path:
    """Samples to first reach the recovery threshold against feature probability (log x), one colour per SAE.

    Features never recovered are drawn as crosses on a line above the plot's data, labelled "never".
    """
    probs = report["probabilities"]
    saes = report["saes"]
    fig = new_figure(7.5, 4.4)
    ax = fig.add_subplot()
    found_max = max((s for sae in saes for s in sae["first_samples"] if s is not None), default=0)
    never_y = max(found_max, 1) * 1.08
    for i, sae in enumerate(saes):
        summary = sae["summary"]
        points = [(p, s) for p, s in zip(probs, sae["first_samples"], strict=True) if s is not None]
        never = [p for p, s in zip(probs, sae["first_samples"], strict=True) if s is None]
        rho = summary["spearman"]
        label = f"{summary['name']} (Spearman {rho:+.2f})" if rho is not None else summary["name"]
        ax.scatter(
            [p for p, _ in points],
            [s for _, s in points],
            s=9,
            marker=MARKERS[i % len(MARKERS)],
            facecolors="none",
            edgecolors=f"C{i % 10}",
            linewidths=0.7,
            alpha=0.8,
            label=label,
        )
        if never:
            ax.scatter(never, [never_y] * len(never), s=12, marker="x", color=f"C{i % 10}", linewidths=0.7)
    if any(s is None for sae in saes for s in sae["first_samples"]):
        ax.axhline(never_y, color="grey", linewidth=0.5, linestyle=":")
        ax.text(1.0, never_y, " never", transform=ax.get_yaxis_transform(), va="center", fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("feature probability (log)")
    ax.set_ylabel(f"samples to reach cosine {report['threshold']:g}")
    ax.set_title("Recovery order: samples until each ground-truth feature is first found", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, len(saes))
    return save_figure(fig, path)


def plot_recovered_fraction(report: dict, path: Path) -> Path:
    """Fraction of ground-truth features at or above the recovery threshold against samples, one line per SAE."""
    fig = new_figure(7.5, 4.2)
    ax = fig.add_subplot()
    for i, sae in enumerate(report["saes"]):
        ax.plot(
            sae["samples"], sae["recovered_fraction"], color=f"C{i % 10}", linewidth=1.2, label=sae["summary"]["name"]
        )
    ax.set_xlabel("training samples")
    ax.set_ylabel(f"fraction of features at cosine >= {report['threshold']:g}")
    ax.set_ylim(0, 1.02)
    ax.set_title("Features recovered over training", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, len(report["saes"]))
    return save_figure(fig, path)


def plot_mmcs_by_init(comparison: list[dict], train_log: list[dict], path: Path) -> Path:
    """MMCS against samples, one colour per init scheme, starting at the initialisation (sample 0).

    Left: the whole curve; right: the same zoomed on MMCS >= 0.75 with the thresholds of the table.
    """
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for line in train_log:
        if line.get("mmcs") is not None:
            curves[line["run"]].append((int(line["samples"]), float(line["mmcs"])))
    schemes = list(dict.fromkeys(str(row["init"]) for row in comparison))
    fig = new_figure(11.0, 4.2)
    axes = fig.subplots(1, 2)
    styles = ["-", "--", ":", "-."]
    seen: dict[str, int] = defaultdict(int)
    for row in comparison:
        scheme = str(row["init"])
        points = sorted([(0, row["initial_mmcs"]), *curves.get(row["name"], [])])
        colour = f"C{schemes.index(scheme) % 10}"
        style = styles[seen[scheme] % len(styles)]
        seen[scheme] += 1
        for ax in axes:
            ax.plot([p[0] for p in points], [p[1] for p in points], color=colour, linestyle=style, label=row["name"])
    for threshold in MMCS_THRESHOLDS:
        axes[1].axhline(threshold, color="grey", linewidth=0.5, linestyle=":")
    axes[0].set_ylim(0, 1.02)
    axes[1].set_ylim(ZOOM_FLOOR, 1.0)
    for ax, title in zip(axes, ("MMCS vs ground truth by initialisation", "zoomed"), strict=True):
        ax.set_xlabel("training samples")
        ax.set_ylabel("MMCS vs ground truth")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    _legend(axes[1], len(comparison))
    return save_figure(fig, path)


def write_recovery_figures(
    comparison: list[dict], train_log: list[dict], report: dict | None, folder: Path
) -> list[Path]:
    """``mmcs_by_init.png`` when the sweep compares init schemes; ``recovery_vs_probability.png`` and
    ``recovered_fraction.png`` when recovery was tracked."""
    written = []
    if len({row["init"] for row in comparison}) > 1:
        written.append(plot_mmcs_by_init(comparison, train_log, folder / "mmcs_by_init.png"))
    if report is not None and report["saes"]:
        written.append(plot_recovery_vs_probability(report, folder / "recovery_vs_probability.png"))
        written.append(plot_recovered_fraction(report, folder / "recovered_fraction.png"))
    return written
