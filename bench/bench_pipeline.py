"""Throughput and stage times of the LM pipeline (`monosemantic run`), read from a finished run.

Runs the chosen preset into a fresh folder (or reads an existing run folder with --workdir) and prints
LM training tokens/s, harvest tokens/s, SAE sweep samples/s (summed over the SAEs trained together) and
the wall time of every stage.

    .venv/bin/python bench/bench_pipeline.py [--preset quick|default] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from training.experiments.pipeline import PRESETS, run_pipeline


def report(workdir: Path, metrics: dict) -> None:
    """Print the throughput figures and stage times of a finished pipeline run."""
    lm = metrics["lm"]
    harvest = json.loads((workdir / "activations" / "activations_train.json").read_text())
    sweep_rows = metrics["config"]["sae_samples"] * len(metrics["runs"])
    sweep_seconds = metrics["stage_seconds"].get("sae_sweep", 0.0)
    print(f"preset {metrics['preset']}: {lm['train_tokens']:,} training tokens, {len(metrics['runs'])} SAEs")
    print(f"  LM training   {lm['tokens_per_s']:>12,.0f} tokens/s  (val loss {lm['val_loss']:.3f})")
    print(f"  harvest       {harvest['tokens_per_s']:>12,.0f} tokens/s")
    if sweep_seconds > 0:
        print(f"  SAE sweep     {sweep_rows / sweep_seconds:>12,.0f} samples/s over all SAEs of the sweep")
    print("  stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in metrics["stage_seconds"].items()))
    print(f"  total {sum(metrics['stage_seconds'].values()):.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="resume this run folder (stage times then cover only what was left)"
    )
    args = parser.parse_args()
    if args.workdir is not None:
        report(args.workdir, run_pipeline(PRESETS[args.preset], args.workdir, progress=False))
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        report(workdir, run_pipeline(PRESETS[args.preset], workdir, progress=False))


if __name__ == "__main__":
    main()
