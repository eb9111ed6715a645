"""Which recipe keeps a large dictionary holding when its rows double? A probe on a run's activations.

Trains the named SAEs (by default as recipe v2 makes them) on ``--rows`` rows of a pipeline run's
activations with the doubling schedule, whose half-rows SAEs are a cool-down branch, and writes each SAE's
doubling verdict, dead and rare counts, held-out objective, and the latents silent on the held-out rows
(with how many are negative on every row, beyond a ReLU'd gradient's reach). Each SAE is
``arch:size:sparsity:lr[:field=value,...]``; the fields override the recipe's SAEConfig (values are JSON,
else strings) and name the SAE's tag unless ``tag=`` names it, e.g.

    .venv/bin/python scripts/recipe_probe.py --run runs/study --rows 3000000 \\
        --sae relu:4096:0.3:7.5e-4 --sae topk:2048:8:2.1e-3:k_start=1 \\
        --workdir runs/recipe_probe --out docs/results/study/recipe_probe.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from training.activations.harvest import ActivationSource
from training.experiments.doubling_report import add_doubling
from training.experiments.pipeline import PRESETS, ScaledSource
from training.experiments.record import check_record_header, write_check_record
from training.saes.recipes import RECIPES, recipe_sae_config
from training.sweeps.convergence import heldout_point
from training.sweeps.trainer import TrainConfig, train_sweep


def field_value(text: str):
    """A field's value from the command line: JSON where it parses (numbers, true, null), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_sae(spec: str, d_in: int, recipe: str = "v2"):
    """``arch:size:sparsity:lr[:field=value,...]`` as the recipe's SAEConfig with that rate and those fields."""
    arch, size, sparsity, lr, *rest = spec.split(":")
    key = {"k": int(sparsity)} if arch == "topk" else {"l1": float(sparsity)}
    config = recipe_sae_config(RECIPES[recipe], arch, d_in, int(size), **key)
    overrides = dict(item.split("=", 1) for item in rest[0].split(",")) if rest else {}
    tag = overrides.pop("tag", None) or "_".join([f"lr{float(lr):g}", *(f"{k}{v}" for k, v in overrides.items())])
    fields = {**config.model_dump(), **{k: field_value(v) for k, v in overrides.items()}}
    return type(config)(**{**fields, "lr": float(lr), "tag": tag})


def silent_latents(sae, rows: torch.Tensor, chunk: int = 4096) -> dict[str, int]:
    """Latents that never fire on ``rows``, and how many of them are negative on every row.

    A ReLU passes no gradient below zero, so a latent negative everywhere is out of reach of any loss that
    goes through it (aux-k included), however strongly that loss is weighted."""
    fired = torch.zeros(sae.config.dict_size, dtype=torch.bool)
    positive = torch.zeros_like(fired)
    with torch.no_grad():
        for start in range(0, rows.shape[0], chunk):
            x = rows[start : start + chunk]
            fired[sae.firing(x)[1].unique()] = True
            positive |= (sae.pre_activations(x) > 0).any(dim=0)
    return {"silent": int((~fired).sum()), "silent_negative_everywhere": int((~fired & ~positive).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a pipeline run folder with activations/")
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--sae", action="append", required=True, help="arch:size:sparsity:lr[:f=v,...] (repeatable)")
    parser.add_argument("--recipe", default="v2", choices=sorted(RECIPES), help="the recipe the SAEs start from")
    parser.add_argument("--warmup", type=float, default=0.01, help="learning-rate warm-up, a fraction of the rows")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    preset = PRESETS["study"]
    source = ScaledSource(ActivationSource(args.run / "activations"))
    held_out = source.batch(-1_000_000, preset.eval_rows)
    configs = [parse_sae(spec, source.dim, args.recipe) for spec in args.sae]
    train = TrainConfig(
        samples=args.rows,
        batch_size=preset.sae_batch_size,
        horizon_samples=args.rows,
        half="cooldown",
        warmup_fraction=args.warmup,
    )
    start = time.perf_counter()
    runs = train_sweep(configs, source, train, args.workdir / "saes", source.spec())
    seconds = time.perf_counter() - start
    metrics = {"runs": [{"name": run.config.name} for run in runs]}
    index_rows = ActivationSource(args.run / "activations").manifest.shape[0]
    add_doubling(metrics, args.workdir / "saes", {run.config.name: run.sae for run in runs}, held_out, index_rows)
    record = check_record_header(
        __file__,
        "Which recipe makes large dictionaries hold when their rows double (doubling schedule, cool-down branch)?",
        "python scripts/recipe_probe.py " + shlex.join(sys.argv[1:]),
    )
    record.update(
        rows=args.rows,
        warmup_fraction=args.warmup,
        train_seconds=round(seconds, 1),
        basis=metrics["doubling"]["basis"],
        saes=[
            {
                "name": run.config.name,
                "lr": run.config.lr,
                "config": run.config.model_dump(),
                "holds": entry["holds"],
                "moved": entry["moved"],
                "half": entry["doubling"]["half"],
                "end": entry["doubling"]["end"],
                "objective": heldout_point(run.sae, held_out)["objective"],
                "held_out": silent_latents(run.sae, held_out),
            }
            for run, entry in zip(runs, metrics["runs"], strict=True)
        ],
    )
    write_check_record(args.out, record)
    for sae in record["saes"]:
        moved = ", ".join(m["metric"] for m in sae["moved"]) or "-"
        end = sae["end"]
        print(f"{sae['name']}: holds {sae['holds']} (moved: {moved}); end {end}")


if __name__ == "__main__":
    main()
