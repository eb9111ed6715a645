"""A run's results as a small committed record: ``record.json``, its key figures and a README stating the numbers.

Weights never go in: the record names the commit and the command that rebuild them. Every SAE carries its
doubling verdict and every estimate its interval and whether it holds, so a reader sees at once which
numbers are final and which were still moving.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

from training.analysis.mlp_usage import usage_summary
from training.features.bundle import BUNDLE_DIR, bundle_size, write_bundle
from training.features.index import feature_index_folders

FIGURES = (
    "toy_vs_lm.png",
    "mmcs_with_larger.png",
    "heldout_objective_vs_samples.png",
    "heatmap_fvu_relu.png",
    "heatmap_dead_fraction_relu.png",
    "heatmap_dead_or_rare_fraction_relu.png",
)
STUDY = "Sharkey, Braun and Millidge (2022): 512-1024 features in layer 3's MLP, about 600 easily labellable"


def current_commit(repo: Path) -> str:
    """The checked-out commit of ``repo`` (with "+changes" when the tree differs from it), or "unknown"."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+changes" if dirty.strip() else "")


def machine() -> dict:
    """What the record was computed on, as far as this process can tell."""
    return {"platform": platform.platform(), "processor": platform.machine(), "cpu_cores": os.cpu_count()}


def check_record_header(script: str, question: str, command: str, **machine_extra) -> dict:
    """The opening fields of a check script's JSON record: its question, command, code, date and machine.

    ``script`` is the script's ``__file__``; the repository above its folder names the commit.
    """
    return {
        "question": question,
        "command": command,
        "commit": current_commit(Path(script).resolve().parents[1]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": {**machine(), **machine_extra, "device": "cpu"},
    }


def write_check_record(path: Path, record: dict) -> None:
    """Write a check script's record as indented JSON, making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))


def sae_rows(metrics: dict) -> list[dict]:
    """One row per SAE: size, arch, sparsity, rows, FVU, L0, dead, rare, holds and what moved."""
    rows = []
    samples = (metrics.get("config") or {}).get("sae_samples")
    rounds = metrics.get("doubling_rounds") or []
    if rounds:
        samples = rounds[-1]["samples"]
    hit_cap = set(rounds[-1].get("hit_cap", [])) if rounds else set()
    for run in metrics.get("runs", []):
        evidence = run.get("evidence") or {}
        rows.append(
            {
                "name": run["name"],
                "dict_size": run["dict_size"],
                "arch": run["arch"],
                "sparsity": {key: run[key] for key in ("l1", "k") if run.get(key) is not None},
                "rows": samples,
                "fvu": run.get("fvu"),
                "l0": run.get("l0"),
                "dead": evidence.get("dead"),
                "rare": evidence.get("rare"),
                "alive": evidence.get("alive"),
                "ce_recovered": run.get("ce_recovered"),
                "objective": run.get("objective"),
                "holds": run.get("holds"),
                "moved": [m["metric"] for m in run.get("moved") or []],
                "hit_cap": run["name"] in hit_cap,
            }
        )
    return rows


def estimate_rows(metrics: dict) -> list[dict]:
    """Every feature-count estimate with its method, value, interval and whether it holds."""
    estimate = metrics.get("feature_count_estimate") or {}
    edge = ", still rising at the largest pair of sizes: a lower bound" if estimate.get("peak_at_largest_pair") else ""
    rows = [
        {
            "method": "stable atoms across sizes (" + str(estimate.get("sparsity")) + edge + ")",
            "value": estimate.get("value"),
            "low": estimate.get("low"),
            "high": estimate.get("high"),
            "holds": estimate.get("holds"),
            "curve": estimate.get("curve"),
            "peak_at_largest_pair": estimate.get("peak_at_largest_pair"),
        }
    ]
    for entry in estimate.get("from_dead_fraction", []):
        rows.append(
            {
                "method": f"dead-neuron view, {entry['sweep']} ({estimate.get('from_dead_fraction_counts', 'dead')})",
                "value": entry.get("value"),
                "low": None,
                "high": None,
                "holds": entry.get("holds"),
                "saturated_at": entry.get("saturated_at"),
            }
        )
    return rows


def build_record(workdir: Path, command: str, repo: Path) -> dict:
    """The record of the run in ``workdir`` (its metrics.json), naming ``command`` and the repository's commit."""
    metrics = json.loads((Path(workdir) / "metrics.json").read_text())
    lm = metrics.get("lm") or {}
    return {
        "commit": current_commit(repo),
        "command": command,
        "preset": metrics.get("preset"),
        "machine": {**machine(), "device": metrics.get("device", "cpu"), "stage_devices": metrics.get("stage_devices")},
        "stage_seconds": metrics.get("stage_seconds"),
        "lm": {
            **{key: lm.get(key) for key in ("val_loss", "unigram_loss", "bigram_loss", "steps", "best_step")},
            # Runs from before these settings existed used GPT-2's init and seed 0.
            "init": (metrics.get("config") or {}).get("lm_init", "gpt2"),
            "seed": (metrics.get("config") or {}).get("lm_seed", 0),
            "mlp_usage": next((u for u in lm.get("mlp_usage", []) if u["layer"] == metrics.get("layer")), None),
        },
        "saes": sae_rows(metrics),
        "estimates": estimate_rows(metrics),
        "doubling": metrics.get("doubling"),
        "doubling_rounds": metrics.get("doubling_rounds"),
        "objective_by_size": metrics.get("objective_by_size"),
        "recipe": (metrics.get("config") or {}).get("recipe", "v1"),
        "toy_vs_lm": metrics.get("toy_vs_lm"),
        "study": STUDY,
    }


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def objective_lines(check: dict | None) -> list[str]:
    """The README's statement of the held-out objective check (larger dictionaries never end worse)."""
    if not check:
        return []
    if check["holds"]:
        return [
            "At every sparsity the held-out objective does not get worse as the dictionary grows "
            f"(tolerance {check['tolerance']:.1%})."
        ]
    worse = [
        f"{s['arch']} {s.get('l1', s.get('k'))} at {w['dict_size']} ({w['worse_by']:+.1%} on {w['smaller']})"
        for s in check["sweeps"]
        for w in s["worse"]
    ]
    return [
        "Larger dictionaries that end worse on the held-out objective than a smaller one: " + "; ".join(worse) + "."
    ]


def readme(record: dict) -> str:
    """A short README stating the record's numbers, with intervals and doubling verdicts, beside the study's."""
    lm = record["lm"]
    holding = sum(1 for s in record["saes"] if s["holds"])
    lines = [
        f"# Results of `{record['command']}`",
        "",
        f"Commit `{record['commit']}`, on {record['machine']['device']} ({record['machine']['cpu_cores']} CPU cores).",
        f"The study: {record['study']}.",
        "",
        f"LM validation loss {_fmt(lm['val_loss'])} nats/token (unigram {_fmt(lm['unigram_loss'])}, "
        f"bigram {_fmt(lm['bigram_loss'])}); LM init {lm.get('init', 'gpt2')}, seed {lm.get('seed', 0)}.",
        *([f"The SAEs' {usage_summary(lm['mlp_usage'])}."] if lm.get("mlp_usage") else []),
        f"{holding} of {len(record['saes'])} SAEs hold when their rows double (recipe {record.get('recipe', 'v1')}).",
        *objective_lines(record.get("objective_by_size")),
        "",
        "| estimate | value | interval | holds |",
        "| --- | --- | --- | --- |",
    ]
    for e in record["estimates"]:
        interval = f"{_fmt(e['low'])}-{_fmt(e['high'])}" if e["low"] is not None else "–"
        lines.append(f"| {e['method']} | {_fmt(e['value'])} | {interval} | {_fmt(e['holds'])} |")
    lines += [
        "",
        "| SAE | rows | FVU | L0 | dead | rare | held-out objective | holds | moved |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in record["saes"]:
        moved = ", ".join(s["moved"]) + (" (hit the cap)" if s["hit_cap"] else "")
        lines.append(
            f"| {s['name']} | {_fmt(s['rows'])} | {_fmt(s['fvu'])} | {_fmt(s['l0'])} | {_fmt(s['dead'])} | "
            f"{_fmt(s['rare'])} | {_fmt(s.get('objective'))} | {_fmt(s['holds'])} | {moved} |"
        )
    twin = record.get("toy_vs_lm")
    if twin:
        rho = ", ".join(f"{k} {_fmt(v)}" for k, v in twin["rank_correlations"].items())
        lines += [
            "",
            f"Toy twin (d={twin['toy']['dim']}, G={twin['toy']['n_features']}) against the LM, "
            f"rank correlation of the heatmaps: {rho}.",
        ]
    lines += ["", "![toy data and the LM in one form](toy_vs_lm.png)" if twin else ""]
    return "\n".join(lines).rstrip() + "\n"


def write_record(workdir: Path, out: Path, command: str, repo: Path) -> dict:
    """Write ``record.json``, the run's key figures, ``README.md`` and the labelling bundle into ``out``; the record.

    The bundle (``training.features.bundle``) is written when the run has a feature index; ``labelling``
    in the record lists its dictionaries, or is None without one.
    """
    record = build_record(workdir, command, repo)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record["labelling"] = None
    if feature_index_folders(Path(workdir)):
        bundled = write_bundle(Path(workdir), out)
        record["labelling"] = {
            "folder": BUNDLE_DIR,
            "bytes": bundle_size(out),
            "dictionaries": [{"name": b.name, "weights_hash": b.weights_hash, "bytes": b.bytes} for b in bundled],
        }
    (out / "record.json").write_text(json.dumps(record, indent=2))
    for name in FIGURES:
        source = Path(workdir) / "figures" / name
        if source.is_file():
            shutil.copyfile(source, out / name)
    (out / "README.md").write_text(readme(record))
    return record
