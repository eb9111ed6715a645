"""Build a preset's run on one device and write its record, without the app's database: for a GPU check.

The GPU machine lacks the web stack (FastAPI, SQLAlchemy), so this calls the pipeline and the record
writer directly, the same code `monosemantic run` and `monosemantic record` call.

    python bench/gpu_study.py --preset study --device cuda --workdir RUN --record OUT
    python bench/gpu_study.py --preset study --device cuda --max-sae-samples 48000000 --workdir RUN --record OUT

``--max-sae-samples`` raises the preset's cap on the doubling rounds: the study on 2 cores stops at 12M rows
with its large dictionaries still moving, and a GPU can afford the rounds that follow.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from training.experiments.pipeline import PRESETS, run_pipeline
from training.experiments.record import write_record
from training.runtime.device import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="study", choices=sorted(PRESETS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--record", type=Path, required=True, help="folder for record.json, README and figures")
    parser.add_argument(
        "--max-sae-samples", type=int, default=None, help="cap on the doubling rounds' rows (default: the preset's)"
    )
    args = parser.parse_args()
    config = PRESETS[args.preset]
    if args.max_sae_samples is not None:
        if args.max_sae_samples < config.sae_samples:
            parser.error(f"--max-sae-samples must be at least the preset's first round, {config.sae_samples:,} rows")
        config = config.model_copy(update={"max_sae_samples": args.max_sae_samples})
    device = resolve_device(args.device)
    started = time.perf_counter()
    metrics = run_pipeline(config, args.workdir, progress=False, device=device)
    wall = time.perf_counter() - started
    command = f"python bench/gpu_study.py --preset {args.preset} --device {args.device}"
    if args.max_sae_samples is not None:
        command += f" --max-sae-samples {args.max_sae_samples}"
    record = write_record(args.workdir, args.record, command, Path(__file__).resolve().parents[1])
    holding = sum(1 for s in record["saes"] if s["holds"])
    summary = {
        "preset": args.preset,
        "device": metrics["device"],
        "stage_devices": metrics["stage_devices"],
        "wall_seconds": round(wall, 1),
        "stage_seconds": {k: round(v, 1) for k, v in metrics["stage_seconds"].items()},
        "lm_val_loss": metrics["lm"]["val_loss"],
        "lm_tokens_per_s": metrics["lm"].get("tokens_per_s"),
        "max_sae_samples": config.max_sae_samples,
        "doubling_rounds": [{"samples": r["samples"], "moving": len(r["moving"])} for r in metrics["doubling_rounds"]],
        "saes_holding": f"{holding} of {len(record['saes'])}",
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
