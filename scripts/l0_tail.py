"""What is relu's L0 drift made of? L0 above activation thresholds, at half the rows and at all of them.

For each relu SAE of a study run, reads the half-rows SAE (the shorter round's complete run) and the full
one, and measures on the same held-out rows the L0 counting every positive activation and counting only
activations above a threshold, and how much the reconstruction error grows when the activations below the
threshold are dropped. Activations are on unit atoms and the rows have unit mean squared norm, so 0.01 is
an atom written at 1% of a typical row's norm.

    .venv/bin/python scripts/l0_tail.py --run runs/study_v3 --half saes_rows_6000000 \\
        --out docs/results/study_v3/l0_tail.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from training.activations.harvest import ActivationSource
from training.experiments.pipeline import PRESETS, ScaledSource
from training.experiments.record import check_record_header, write_check_record
from training.saes import load_sae

THRESHOLDS = (0.0, 0.01, 0.03, 0.1)


def tail_profile(sae, rows: torch.Tensor) -> dict:
    """L0 above each threshold and the relative growth of the squared error when smaller codes are dropped."""
    with torch.no_grad():
        codes = sae.encode(rows)
        base = (sae.decode(codes) - rows).pow(2).sum(dim=1).mean().item()
        profile = {}
        for threshold in THRESHOLDS:
            kept = codes * (codes > threshold)
            error = (sae.decode(kept) - rows).pow(2).sum(dim=1).mean().item()
            profile[f"{threshold:g}"] = {
                "l0": (kept > 0).sum(dim=1).float().mean().item(),
                "error_growth": error / base - 1,
            }
    return profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a study run with its last round in saes/")
    parser.add_argument("--half", required=True, help="the folder of the round with half the rows, in --run")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    source = ScaledSource(ActivationSource(args.run / "activations"))
    rows = source.batch(-1_000_000, PRESETS["study"].eval_rows)
    metrics = json.loads((args.run / "metrics.json").read_text())
    saes = []
    for entry in metrics["runs"]:
        if entry["arch"] != "relu":
            continue
        half = tail_profile(load_sae(args.run / args.half / "saes" / entry["name"]), rows)
        end = tail_profile(load_sae(args.run / "saes" / "saes" / entry["name"]), rows)
        saes.append(
            {
                "name": entry["name"],
                "half": half,
                "end": end,
                "l0_change": {t: end[t]["l0"] / half[t]["l0"] - 1 for t in half},
            }
        )
        print(entry["name"], " ".join(f">{t}: {c:+.1%}" for t, c in saes[-1]["l0_change"].items()))
    record = check_record_header(
        __file__,
        "How much of relu's L0 change between half the rows and all of them is in small activations?",
        "python scripts/l0_tail.py " + shlex.join(sys.argv[1:]),
    )
    record.update(
        run=str(args.run),
        held_out_rows=rows.shape[0],
        thresholds=list(THRESHOLDS),
        basis="activations on unit atoms; rows scaled to unit mean squared norm; error_growth: relative growth of "
        "the mean squared reconstruction error when activations at or below the threshold are dropped",
        saes=saes,
    )
    write_check_record(args.out, record)


if __name__ == "__main__":
    main()
