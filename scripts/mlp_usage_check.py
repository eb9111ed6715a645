"""How much of each MLP layer do LMs trained with different settings use, on the same validation tokens?

For each LM folder (a finished ``lm/`` or, for one still training, its checkpoint) this records its
training settings, validation loss and, per layer, ``training.analysis.mlp_usage``: live neurons,
the 99% dimension of the post-GELU state, its share outside the residual width and the mean-ablation cost.

    .venv/bin/python scripts/mlp_usage_check.py --tokens runs/study/tokens --out docs/results/mlp_usage.json \\
        runs/study/lm runs/default/lm runs/study_gpt2_wd0/lm runs/study_fan_in/lm runs/default_fanin/lm
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from training.analysis.mlp_usage import lm_mlp_usage
from training.data.tokenizer import load_tokenized
from training.experiments.record import check_record_header, write_check_record
from training.lm.tinylm import TinyLM, TinyLMConfig, eval_windows

WINDOWS = 200


def load_any(directory: Path) -> tuple[TinyLM, str]:
    """The LM in ``directory``: its final weights, else its latest checkpoint; and which it was."""
    config = TinyLMConfig.model_validate_json((directory / "config.json").read_text())
    model = TinyLM(config)
    final = directory / "model.safetensors"
    if final.exists():
        model.load_state_dict(load_file(str(final)))
        return model.eval(), "final"
    state = json.loads((directory / "checkpoint" / "state.json").read_text())
    model.load_state_dict(load_file(str(directory / "checkpoint" / "model.safetensors")))
    return model.eval(), f"checkpoint at step {state['step']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lms", nargs="+", type=Path, help="LM folders")
    parser.add_argument("--tokens", type=Path, default=Path("runs/study/tokens"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/mlp_usage.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    val = load_tokenized(args.tokens).val.tokens
    rows = []
    for directory in args.lms:
        model, weights = load_any(directory)
        windows = eval_windows(np.asarray(val), model.config.context, WINDOWS)
        metrics_path = directory / "lm_metrics.json"
        lm_metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        train = json.loads((directory / "train_config.json").read_text())
        usage = [u.numbers() for u in lm_mlp_usage(model, windows)]
        rows.append(
            {
                "lm": str(directory),
                "weights": weights,
                "settings": {
                    k: train.get(k, "gpt2" if k == "init" else None) for k in ("init", "weight_decay", "steps", "lr")
                },
                "val_loss": lm_metrics.get("val_loss"),
                "best_step": lm_metrics.get("best_step"),
                "mlp_usage": usage,
            }
        )
        live = ", ".join(f"L{u['layer']} {u['live_neurons']}" for u in usage)
        print(f"{directory} ({weights}): val {lm_metrics.get('val_loss')}; live neurons {live}")
    record = {
        **check_record_header(
            __file__, __doc__.splitlines()[0], "python scripts/mlp_usage_check.py " + " ".join(str(p) for p in args.lms)
        ),
        "validation_tokens": WINDOWS * 128,
        "lms": rows,
    }
    write_check_record(args.out, record)


if __name__ == "__main__":
    main()
