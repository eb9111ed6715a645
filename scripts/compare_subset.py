"""Do SAEs find more features on an LM whose MLP uses more of its neurons? Two runs, the same sizes and rows.

For each run folder and each round of its doubling (3M, 6M and 12M rows: ``saes_rows_<N>/`` and ``saes/``),
this loads the SAEs of the chosen sizes, counts alive latents on the run's own held-out rows (the
evidence criteria of the doubling test), and computes the stable-atom estimate over those sizes only, so a
run trained on a subset of the study's sizes is compared with the study run on the same subset.

    .venv/bin/python scripts/compare_subset.py runs/study runs/study_fan_in --sizes 512,1024,2048 \\
        --out docs/results/fan_in_vs_gpt2.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from training.activations.harvest import ActivationSource
from training.analysis.doubling import estimate_doubling, heldout_min_firings
from training.experiments.doubling_report import heldout_evidence
from training.experiments.pipeline import ScaledSource
from training.experiments.record import check_record_header, write_check_record
from training.features.evidence import DEFAULT_MIN_FIRINGS
from training.saes import load_sae

ROUNDS = (3_000_000, 6_000_000, 12_000_000)


def round_dir(workdir: Path, rows: int) -> Path:
    archived = workdir / f"saes_rows_{rows}"
    return (archived if archived.is_dir() else workdir / "saes") / "saes"


def run_summary(workdir: Path, sizes: list[int]) -> dict:
    """Alive latents per SAE and the stable-atom estimate over ``sizes``, at each round of ``workdir``."""
    metrics = json.loads((workdir / "metrics.json").read_text())
    source = ScaledSource(ActivationSource(workdir / "activations"))
    held_out = source.batch(-1_000_000, metrics["config"]["eval_rows"])
    firings = heldout_min_firings(DEFAULT_MIN_FIRINGS, held_out.shape[0], source.source.manifest.shape[0])
    rounds = []
    for rows in ROUNDS:
        folder = round_dir(workdir, rows)
        saes = {}
        for path in sorted(folder.iterdir()):
            if (path / "sae.safetensors").exists():
                sae = load_sae(path)
                if sae.config.dict_size in sizes:
                    saes[path.name] = sae
        per_sae, estimate = heldout_evidence(saes, held_out, firings)
        rounds.append(
            {
                "rows": rows,
                "saes": per_sae,
                "stable_atoms": {k: estimate[k] for k in ("value", "low", "high", "sparsity")},
            }
        )
    for half, end in zip(rounds, rounds[1:], strict=False):
        end["stable_atoms"]["doubling"] = estimate_doubling(half["stable_atoms"]["value"], end["stable_atoms"]["value"])
    usage = next((u for u in metrics["lm"].get("mlp_usage", []) if u["layer"] == metrics["layer"]), None)
    return {
        "workdir": str(workdir),
        "preset": metrics["preset"],
        "lm_val_loss": metrics["lm"]["val_loss"],
        "mlp_usage": usage,
        "held_out_rows": int(held_out.shape[0]),
        "held_out_min_firings": firings,
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+", type=Path)
    parser.add_argument("--sizes", default="512,1024,2048")
    parser.add_argument("--out", type=Path, default=Path("docs/results/fan_in_vs_gpt2.json"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    torch.set_num_threads(2)
    runs = [run_summary(w, sizes) for w in args.workdirs]
    record = {
        **check_record_header(
            __file__,
            __doc__.splitlines()[0],
            "python scripts/compare_subset.py " + " ".join(str(w) for w in args.workdirs) + f" --sizes {args.sizes}",
        ),
        "sizes": sizes,
        "runs": runs,
    }
    write_check_record(args.out, record)
    for run in runs:
        print(run["workdir"], f"LM {run['lm_val_loss']:.3f}")
        for r in run["rounds"]:
            alive = {name: s["alive"] for name, s in r["saes"].items()}
            print(f"  {r['rows']:>10,} rows: stable atoms {r['stable_atoms']}; alive {alive}")


if __name__ == "__main__":
    main()
