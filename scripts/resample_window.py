"""Does a longer resampling window let the study's SAEs hold when their rows double?

The study run's SAEs lost latents between 6M and 12M rows after resampling stopped at 40% of the rows.
This trains relu SAEs of 1024 latents (l1 0.1 and 0.3) on the study run's activations, with resampling
until 70% of the rows (where the learning rate starts to decay), on 6M and 12M rows, and applies the
doubling test to each pair. The run's own 40%-window SAEs are measured beside them on the same held-out
rows, and one of them is trained again to check that the training reproduces.

    .venv/bin/python scripts/resample_window.py --workdir runs/study --out docs/results/resample_window.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from training.activations.harvest import ActivationSource
from training.analysis.doubling import heldout_min_firings, heldout_snapshot, sae_doubling
from training.experiments.pipeline import PRESETS, ScaledSource
from training.experiments.record import check_record_header, write_check_record
from training.features.evidence import DEFAULT_MIN_CONTRIBUTION, DEFAULT_MIN_FIRINGS
from training.saes import SAEConfig, SparseAutoencoder, load_sae
from training.sweeps.trainer import TrainConfig, train_sweep

SIZE = 1024
L1S = (0.1, 0.3)
WIDE_WINDOW = 0.7


def _numbers(sae: SparseAutoencoder, held_out: torch.Tensor, min_firings: int) -> dict:
    return heldout_snapshot(sae, held_out, min_firings, DEFAULT_MIN_CONTRIBUTION).numbers()


def _train(configs: list[SAEConfig], source: ScaledSource, rows: int, folder: Path) -> dict[str, SparseAutoencoder]:
    runs = train_sweep(configs, source, TrainConfig(samples=rows, batch_size=512), folder, source.spec())
    return {run.config.name + f"@{run.config.resample_until:g}": run.sae for run in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/study"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/resample_window.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    preset = PRESETS["study"]
    source = ScaledSource(ActivationSource(args.workdir / "activations"))
    held_out = source.batch(-1_000_000, preset.eval_rows)
    index_rows = source.source.manifest.shape[0]
    min_firings = heldout_min_firings(DEFAULT_MIN_FIRINGS, held_out.shape[0], index_rows)
    given = {
        (rows, l1, 0.4): load_sae(folder / f"relu_n{SIZE}_l1{l1:g}")
        for rows, folder in (
            (6_000_000, args.workdir / "saes_rows_6000000" / "saes"),
            (12_000_000, args.workdir / "saes" / "saes"),
        )
        for l1 in L1S
    }
    started = time.perf_counter()
    trained: dict[tuple[int, float, float], SparseAutoencoder] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rows in (6_000_000, 12_000_000):
            configs = [
                SAEConfig(arch="relu", d_in=source.dim, dict_size=SIZE, l1=l1, resample_until=WIDE_WINDOW) for l1 in L1S
            ]
            if rows == 6_000_000:
                configs.append(
                    SAEConfig(
                        arch="relu", d_in=source.dim, dict_size=SIZE, l1=L1S[0], resample_until=0.4, tag="control"
                    )
                )
            for sae in _train(configs, source, rows, Path(tmp) / f"rows_{rows}").values():
                trained[(rows, sae.config.l1, sae.config.resample_until)] = sae
    control = trained.pop((6_000_000, L1S[0], 0.4))
    reproduces = {
        "sae": f"relu_n{SIZE}_l1{L1S[0]:g} on 6M rows, resampling until 40%",
        "max_abs_weight_difference": float((control.W_dec - given[(6_000_000, L1S[0], 0.4)].W_dec).abs().max()),
    }
    saes = {**given, **trained}
    numbers = {key: _numbers(sae, held_out, min_firings) for key, sae in saes.items()}
    results = []
    for l1 in L1S:
        for window in (0.4, WIDE_WINDOW):
            half, end = numbers[(6_000_000, l1, window)], numbers[(12_000_000, l1, window)]
            verdict = sae_doubling(half, end, SIZE)
            results.append(
                {
                    "sae": f"relu_n{SIZE}_l1{l1:g}",
                    "resample_until": window,
                    "rows_6M": half,
                    "rows_12M": end,
                    "holds": verdict["holds"],
                    "moved": [m["metric"] for m in verdict["moved"]],
                }
            )
    record = {
        **check_record_header(
            __file__,
            __doc__.splitlines()[0],
            "python scripts/resample_window.py --workdir runs/study --out docs/results/resample_window.json",
            threads=torch.get_num_threads(),
        ),
        "held_out_rows": int(held_out.shape[0]),
        "held_out_min_firings": min_firings,
        "note": "the MMCS-with-larger check is left out: only one dictionary size is trained",
        "training_seconds": round(time.perf_counter() - started, 1),
        "reproduces": reproduces,
        "results": results,
    }
    write_check_record(args.out, record)
    for r in results:
        print(
            f"{r['sae']} resample until {r['resample_until']:.0%}: 6M {r['rows_6M']} -> 12M {r['rows_12M']}: "
            f"{'holds' if r['holds'] else 'moved ' + ', '.join(r['moved'])}"
        )
    print(f"control: {reproduces}")


if __name__ == "__main__":
    main()
