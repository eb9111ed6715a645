"""The study preset with one LM setting changed, on a subset of its dictionary sizes, recorded for comparison.

The study run's SAEs keep about 100-150 alive latents on layer 2, whose MLP uses 16 of its 64 neurons
(``lm.mlp_usage``). This builds the same experiment (same corpus, tokenizer, LM steps and early stopping,
SAE grid, doubling up to 12M rows) with the LM initialised or regularised differently, so the two records
can be read side by side. Example, for the fan-in initialisation on 512-2048 latents:

    .venv/bin/python scripts/study_variant.py --init fan_in --sizes 512,1024,2048 \\
        --workdir runs/study_fan_in --out docs/results/study_fan_in

With ``--lm-only`` it trains the LM alone (for ``scripts/mlp_usage_check.py``), e.g. GPT-2's init without
weight decay: ``--init gpt2 --weight-decay 0 --lm-only --workdir runs/study_gpt2_wd0``.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

import torch

from training.experiments.distributed import train_pipeline_lm
from training.experiments.pipeline import PRESETS, run_pipeline
from training.experiments.record import write_record

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", choices=("gpt2", "fan_in"), default="fan_in")
    parser.add_argument("--weight-decay", type=float, default=PRESETS["study"].lm_weight_decay)
    parser.add_argument("--seed", type=int, default=0, help="the LM's seed (the SAEs keep theirs)")
    parser.add_argument("--sizes", default="512,1024,2048", help="dictionary sizes, a subset of the study's")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None, help="folder for record.json, README and figures")
    parser.add_argument("--tokens-from", type=Path, default=Path("runs/study"), help="reuse this run's tokens/")
    parser.add_argument("--lm-only", action="store_true", help="train the LM into WORKDIR/lm and stop (no --out)")
    args = parser.parse_args()
    if args.out is None and not args.lm_only:
        parser.error("--out is required unless --lm-only")
    sizes = [int(s) for s in args.sizes.split(",")]
    if not set(sizes) <= set(PRESETS["study"].dict_sizes):
        parser.error(f"--sizes: choose from the study's {PRESETS['study'].dict_sizes}")
    config = PRESETS["study"].model_copy(
        update={
            "name": f"study-{args.init}-wd{args.weight_decay:g}" + (f"-seed{args.seed}" if args.seed else ""),
            "lm_seed": args.seed,
            "lm_init": args.init,
            "lm_weight_decay": args.weight_decay,
            "dict_sizes": sizes,
        }
    )
    tokens = args.tokens_from / "tokens"
    if tokens.is_dir() and not (args.workdir / "tokens").exists():
        shutil.copytree(tokens, args.workdir / "tokens")
    torch.set_num_threads(2)
    if args.lm_only:
        trained = train_pipeline_lm(config, args.workdir, progress=True)
        print(f"LM validation loss {trained.metrics.val_loss:.4f} in {args.workdir / 'lm'}")
        return
    run_pipeline(config, args.workdir)
    command = "python scripts/study_variant.py " + shlex.join(sys.argv[1:])
    record = write_record(args.workdir, args.out, command, REPO)
    print(f"wrote {args.out}: {sum(s['holds'] for s in record['saes'])} of {len(record['saes'])} SAEs hold")


if __name__ == "__main__":
    main()
