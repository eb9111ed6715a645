"""Which training change stops a large relu dictionary from collapsing when its rows double?

In the study run on the fan-in LM, relu dictionaries of 2048 and 4096 latents lose most of their latents
with more rows and end at a worse held-out objective than on half the rows (docs/experiment.md). This
trains one such dictionary on the doubled rows with one setting changed at a time (a lower learning rate,
or resampling until the learning rate decays), on the doubled rows and on half of them, and compares each
with the run's own SAEs on the same held-out rows: alive latents, L0, FVU, the held-out objective, and the
doubling test (without MMCS-with-larger, as there is one size). Example:

    .venv/bin/python scripts/collapse_probe.py --run runs/study_v2 --extended runs/study_v2_24m \\
        --size 2048 --l1 0.3 --out docs/results/study/collapse_probe.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from training.activations.harvest import ActivationSource
from training.analysis.doubling import heldout_min_firings, sae_doubling
from training.experiments.doubling_report import heldout_evidence
from training.experiments.pipeline import PipelineConfig, ScaledSource
from training.experiments.record import check_record_header, write_check_record
from training.features.evidence import DEFAULT_MIN_FIRINGS
from training.saes import SAEConfig, SparseAutoencoder, load_sae
from training.sweeps.convergence import heldout_point
from training.sweeps.trainer import TrainConfig, train_sweep

VARIANTS = {
    "lr 0.001": {"lr": 1e-3, "tag": "lr0.001"},
    "resample until 0.7": {"resample_until": 0.7, "tag": "resample0.7"},
}


def numbers(sae: SparseAutoencoder, held_out: torch.Tensor, firings: int) -> dict:
    """Alive latents, L0, FVU and objective of one SAE on the held-out rows."""
    per_sae, _ = heldout_evidence({sae.config.name: sae}, held_out, firings)
    return {**per_sae[sae.config.name], "objective": heldout_point(sae, held_out)["objective"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="the finished run (its last round is the half)")
    parser.add_argument("--extended", type=Path, required=True, help="scripts/rows_extension.py's folder")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--l1", type=float, default=0.3)
    parser.add_argument("--variant", action="append", choices=list(VARIANTS), help="train only these (default all)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    variants = {label: VARIANTS[label] for label in (args.variant or VARIANTS)}
    torch.set_num_threads(2)
    config = PipelineConfig(**{"recipe": "v1", **json.loads((args.run / "metrics.json").read_text())["config"]})
    rows = json.loads((args.extended / "saes" / "sweep.json").read_text())["train"]["samples"]
    source = ScaledSource(ActivationSource(args.run / "activations"))
    held_out = source.batch(-1_000_000, config.eval_rows)
    firings = heldout_min_firings(DEFAULT_MIN_FIRINGS, held_out.shape[0], source.source.manifest.shape[0])
    name = f"relu_n{args.size}_l1{args.l1:g}"
    base = SAEConfig(
        arch="relu", d_in=source.dim, dict_size=args.size, l1=args.l1, resample_until=config.resample_until
    )
    configs = [base.model_copy(update=change) for change in variants.values()]
    started = time.perf_counter()
    trained = {
        n: train_sweep(
            configs,
            source,
            TrainConfig(samples=n, batch_size=config.sae_batch_size),
            args.extended / f"collapse_probe_n{args.size}_rows_{n}",
            source.spec(),
        )
        for n in (rows // 2, rows)
    }
    seconds = time.perf_counter() - started
    measured = {
        f"as trained, {rows // 2:,} rows": numbers(load_sae(args.run / "saes" / "saes" / name), held_out, firings),
        f"as trained, {rows:,} rows": numbers(load_sae(args.extended / "saes" / "saes" / name), held_out, firings),
    }
    doubling = {"as trained": sae_doubling(*measured.values(), args.size)}
    for i, label in enumerate(variants):
        half, end = (numbers(trained[n][i].sae, held_out, firings) for n in (rows // 2, rows))
        measured[f"{label}, {rows // 2:,} rows"] = half
        measured[f"{label}, {rows:,} rows"] = end
        doubling[label] = sae_doubling(half, end, args.size)
    record = {
        **check_record_header(
            __file__,
            __doc__.splitlines()[0],
            f"python scripts/collapse_probe.py --run {args.run} --extended {args.extended} "
            f"--size {args.size} --l1 {args.l1:g} --out {args.out}"
            + "".join(f" --variant '{label}'" for label in args.variant or []),
        ),
        "sae": name,
        "rows": rows,
        "baseline": {"lr": base.lr, "resample_until": base.resample_until},
        "variants": variants,
        "held_out_rows": int(held_out.shape[0]),
        "train_seconds": round(seconds, 1),
        "measured": measured,
        "doubling": doubling,
    }
    write_check_record(args.out, record)
    print({label: verdict["holds"] for label, verdict in doubling.items()})
    for label, m in measured.items():
        print(f"{label:>36}: alive {m['alive']}, L0 {m['l0']:.2f}, FVU {m['fvu']:.4f}, objective {m['objective']:.4f}")


if __name__ == "__main__":
    main()
