"""What feature count does a lower sparsity give on the study run's activations, and does it hold?

The study run's relu sweeps (l1 0.1 and 0.3) converge to about 100-150 alive latents per dictionary. The
toy runs recover their features at l1 0.03. This trains relu SAEs of 256-4096 latents at l1 0.03 (with
resampling until 70% of the rows, where the learning rate starts to decay) on 6M and 12M rows of the run's
activations, and applies the doubling test to every SAE and to the stable-atom estimate.

    .venv/bin/python scripts/sparsity_check.py --workdir runs/study --out docs/results/sparsity_check.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from training.activations.harvest import ActivationSource
from training.analysis.doubling import estimate_doubling, heldout_min_firings, heldout_snapshot, sae_doubling
from training.analysis.metrics import SizedDictionary, feature_count_estimate
from training.experiments.pipeline import PRESETS, ScaledSource
from training.experiments.record import check_record_header, write_check_record
from training.features.evidence import DEFAULT_MIN_CONTRIBUTION, DEFAULT_MIN_FIRINGS
from training.saes import SAEConfig
from training.sweeps.trainer import TrainConfig, train_sweep

SIZES = (256, 512, 1024, 2048, 4096)
L1 = 0.03
WINDOW = 0.7


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/study"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/sparsity_check.json"))
    parser.add_argument("--rows", default="6000000,12000000", help="the two row counts, half then end")
    args = parser.parse_args()
    rows_pair = tuple(int(r) for r in args.rows.split(","))
    torch.set_num_threads(2)
    source = ScaledSource(ActivationSource(args.workdir / "activations"))
    held_out = source.batch(-1_000_000, PRESETS["study"].eval_rows)
    min_firings = heldout_min_firings(DEFAULT_MIN_FIRINGS, held_out.shape[0], source.source.manifest.shape[0])
    configs = [SAEConfig(arch="relu", d_in=source.dim, dict_size=n, l1=L1, resample_until=WINDOW) for n in SIZES]
    started = time.perf_counter()
    snapshots, estimates = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for rows in rows_pair:
            runs = train_sweep(configs, source, TrainConfig(samples=rows, batch_size=512), Path(tmp) / str(rows))
            taken = {
                run.config.dict_size: heldout_snapshot(run.sae, held_out, min_firings, DEFAULT_MIN_CONTRIBUTION)
                for run in runs
            }
            snapshots[rows] = {size: snap.numbers() for size, snap in taken.items()}
            sweep = [
                SizedDictionary(run.config.dict_size, run.sae.W_dec.clone(), taken[run.config.dict_size].dead_mask)
                for run in runs
            ]
            estimates[rows] = feature_count_estimate({f"relu {L1:g}": sweep})
    half, end = rows_pair
    saes = []
    for size in SIZES:
        verdict = sae_doubling(snapshots[half][size], snapshots[end][size], size)
        saes.append(
            {
                "sae": f"relu_n{size}_l1{L1:g}",
                "half": snapshots[half][size],
                "end": snapshots[end][size],
                "holds": verdict["holds"],
                "moved": [m["metric"] for m in verdict["moved"]],
            }
        )
    estimate = {
        "half": {k: estimates[half][k] for k in ("value", "low", "high")},
        "end": {k: estimates[end][k] for k in ("value", "low", "high")},
        "doubling": estimate_doubling(estimates[half]["value"], estimates[end]["value"]),
    }
    record = {
        **check_record_header(
            __file__,
            __doc__.splitlines()[0],
            "python scripts/sparsity_check.py --workdir runs/study --out docs/results/sparsity_check.json",
            threads=torch.get_num_threads(),
        ),
        "rows": {"half": half, "end": end},
        "l1": L1,
        "resample_until": WINDOW,
        "held_out_rows": int(held_out.shape[0]),
        "held_out_min_firings": min_firings,
        "note": "MMCS with the next larger dictionary is not part of these verdicts",
        "training_seconds": round(time.perf_counter() - started, 1),
        "stable_atoms": estimate,
        "saes": saes,
    }
    write_check_record(args.out, record)
    for s in saes:
        print(f"{s['sae']}: {s['half']} -> {s['end']}: {'holds' if s['holds'] else s['moved']}")
    print(f"stable atoms: {estimate}")


if __name__ == "__main__":
    main()
