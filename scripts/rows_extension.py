"""One more doubling round, past the study preset's 12M-row cap, for one sparsity setting of a finished run.

The stable-atom estimate of a ``study`` run reads one sparsity setting's size sweep. When it still moves at
the cap, this trains that setting's SAEs (every size of the run) once more on twice the cap's rows, in a
new folder that links the run's tokens, LM and activations, and compares the round with the run's last one
on the run's own held-out rows: the per-SAE doubling test and the estimate. A run of recipe v2 is not
retrained: the round resumes from the last round's pre-decay state (``saes/stable``). Example:

    .venv/bin/python scripts/rows_extension.py --run runs/study_v2 --l1 0.3 \\
        --workdir runs/study_v2_24m --out docs/results/study_v3/rows_24m_relu_l1_0.3.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch

from training.activations.harvest import ActivationSource
from training.analysis.doubling import estimate_doubling, heldout_min_firings
from training.experiments.doubling_report import add_doubling, heldout_evidence
from training.experiments.pipeline import (
    PipelineConfig,
    ScaledSource,
    sae_configs,
    sweep_train_config,
    sweep_until_holds,
)
from training.experiments.record import check_record_header, write_check_record
from training.features.evidence import DEFAULT_MIN_FIRINGS
from training.saes import load_sae
from training.saes.recipes import RECIPES
from training.sweeps.convergence import sweep_tracker
from training.sweeps.trainer import STABLE_DIR, train_sweep

LINKED = ("tokens", "lm", "activations")


def training_course(sweep_dir: Path, points: int = 40) -> dict[str, list[dict]]:
    """Per SAE, how training went: at each held-out evaluation, the held-out objective, FVU and L0, and the
    dead fraction the training log last reported (latents that did not fire in its recent batches)."""
    dead: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for line in (sweep_dir / "train_log.jsonl").read_text().splitlines():
        entry = json.loads(line)
        dead[entry["run"]].append((entry["step"], entry["dead_fraction"]))
    course: dict[str, list[dict]] = defaultdict(list)
    for line in (sweep_dir / "heldout_log.jsonl").read_text().splitlines():
        entry = json.loads(line)
        seen = [d for step, d in dead[entry["run"]] if step <= entry["step"]]
        course[entry["run"]].append(
            {
                "fraction": round(entry["fraction"], 3),
                "objective": entry["objective"],
                "fvu": entry["fvu"],
                "l0": entry["l0"],
                "train_dead_fraction": seen[-1] if seen else None,
            }
        )
    return {name: steps[-points:] for name, steps in course.items()}


def round_summary(folder: Path, names: list[str], held_out: torch.Tensor, firings: int) -> dict:
    """Alive latents of the named SAEs in ``folder`` (with their final held-out objective, from the sweep's
    log) and their stable-atom estimate, on the held-out rows."""
    course = training_course(folder.resolve().parent)
    per_sae, estimate = heldout_evidence({name: load_sae(folder / name) for name in names}, held_out, firings)
    for name, numbers in per_sae.items():
        numbers["heldout_objective"] = course[name][-1]["objective"] if name in course else None
    return {"saes": per_sae, "stable_atoms": {k: estimate[k] for k in ("value", "low", "high", "sparsity")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished run with doubling rounds (metrics.json)")
    parser.add_argument("--l1", type=float, required=True, help="the relu sparsity setting to extend")
    parser.add_argument("--workdir", type=Path, required=True, help="new folder for the extra round")
    parser.add_argument("--out", type=Path, required=True, help="JSON record of the comparison")
    args = parser.parse_args()
    metrics = json.loads((args.run / "metrics.json").read_text())
    run_config = PipelineConfig(**{"recipe": "v1", **metrics["config"]})  # records before recipes were v1
    if args.l1 not in run_config.l1:
        parser.error(f"--l1: the run's relu grid is {run_config.l1}")
    last_rows = metrics["doubling_rounds"][-1]["samples"]
    rows = 2 * last_rows
    config = run_config.model_copy(update={"l1": [args.l1], "k": [], "sae_samples": rows, "max_sae_samples": rows})
    args.workdir.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        link = args.workdir / name
        if not link.exists():
            link.symlink_to((args.run / name).resolve())
    half = args.workdir / f"saes_rows_{last_rows}"
    if not half.exists():
        half.mkdir()
        (half / "saes").symlink_to((args.run / "saes" / "saes").resolve())
    torch.set_num_threads(2)
    source = ScaledSource(ActivationSource(args.workdir / "activations"))
    held_out = source.batch(-1_000_000, config.eval_rows)
    index_rows = int(source.source.manifest.shape[0])
    started = time.perf_counter()
    if RECIPES[run_config.recipe].cooldown_half:
        train = sweep_train_config(run_config, rows)
        runs = train_sweep(
            sae_configs(config, source.dim),
            source,
            train,
            args.workdir / "saes",
            source.spec(),
            observer=sweep_tracker(args.workdir / "saes", held_out, train),
            resume_from=args.run / "saes" / STABLE_DIR,
        )
    else:
        runs, _, _ = sweep_until_holds(config, source, held_out, args.workdir, index_rows)
    seconds = time.perf_counter() - started
    probe = {"runs": [{"name": run.config.name} for run in runs]}
    add_doubling(
        probe, args.workdir / "saes", {r.config.name: r.sae for r in runs}, held_out, index_rows, half_dir=half / "saes"
    )
    names = [run.config.name for run in runs]
    firings = heldout_min_firings(DEFAULT_MIN_FIRINGS, held_out.shape[0], index_rows)
    before = round_summary(half / "saes", names, held_out, firings)
    after = round_summary(args.workdir / "saes" / "saes", names, held_out, firings)
    record = {
        **check_record_header(
            __file__,
            __doc__.splitlines()[0],
            f"python scripts/rows_extension.py --run {args.run} --l1 {args.l1:g} "
            f"--workdir {args.workdir} --out {args.out}",
        ),
        "run": str(args.run),
        "sweep": f"relu {args.l1:g}",
        "held_out_rows": int(held_out.shape[0]),
        "held_out_min_firings": firings,
        "train_seconds": round(seconds, 1),
        "rounds": [{"rows": last_rows, **before}, {"rows": rows, **after}],
        "stable_atoms_doubling": estimate_doubling(before["stable_atoms"]["value"], after["stable_atoms"]["value"]),
        "saes_doubling": {r["name"]: {"holds": r["holds"], "moved": r["moved"]} for r in probe["runs"]},
        "still_moving": [r["name"] for r in probe["runs"] if r["holds"] is False],
        "training_course": {
            str(last_rows): training_course((half / "saes").resolve().parent),
            str(rows): training_course(args.workdir / "saes"),
        },
        "recipe": run_config.recipe,
        **({"resample_until": config.resample_until} if run_config.recipe == "v1" else {}),
    }
    write_check_record(args.out, record)
    print(f"stable atoms {before['stable_atoms']} -> {after['stable_atoms']}: {record['stable_atoms_doubling']}")
    for name in names:
        print(
            f"  {name}: alive {before['saes'][name]['alive']} -> {after['saes'][name]['alive']}, "
            f"{record['saes_doubling'][name]}"
        )


if __name__ == "__main__":
    main()
