"""Did a top-k SAE's decoder bias drift while a dense latent cancelled it? A check on saved SAEs.

For each saved SAE folder it records the decoder bias's norm, how many encoder biases are positive, the
highest firing rate on held-out rows and how many latents fire on more than half of them, and how the
densest latent's atom points against the decoder bias (a cosine near -1: the two cancel). On our study
activations every top-k run that got worse in its second half had a decoder bias of norm 2-3.5 instead of
about 0.6, and a latent firing on every row. Example:

    .venv/bin/python scripts/dense_latents.py --run runs/study \\
        runs/probe_topk_v4_6m/saes/half/topk_n2048_k8_v4 runs/probe_topk_v4_6m/saes/saes/topk_n2048_k8_v4 \\
        --out docs/results/study/dense_latents.json
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from training.activations.harvest import ActivationSource
from training.experiments.pipeline import PRESETS, ScaledSource
from training.experiments.record import check_record_header, write_check_record
from training.saes import load_sae
from training.saes.base import SparseAutoencoder

DENSE = 0.5


def bias_drift(sae: SparseAutoencoder, rows: torch.Tensor) -> dict:
    """The decoder bias's norm, positive encoder biases, and the densest latents of ``sae`` on ``rows``."""
    with torch.no_grad():
        latents = sae.firing(rows)[1]
        rate = torch.bincount(latents, minlength=sae.config.dict_size).float() / rows.shape[0]
        densest = int(rate.argmax())
        cosine = torch.nn.functional.cosine_similarity(sae.W_dec[densest], sae.b_dec, dim=0)
    return {
        "b_dec_norm": round(sae.b_dec.norm().item(), 4),
        "positive_b_enc": int((sae.b_enc > 0).sum()),
        "top_firing_rate": round(rate.max().item(), 4),
        "dense_latents": int((rate > DENSE).sum()),
        "densest_atom_cos_b_dec": round(cosine.item(), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="the pipeline run whose activations the SAEs read")
    parser.add_argument("saes", nargs="+", type=Path, help="saved SAE folders (config.json + sae.safetensors)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    source = ScaledSource(ActivationSource(args.run / "activations"))
    held_out = source.batch(-1_000_000, PRESETS["study"].eval_rows)
    record = check_record_header(
        __file__,
        "Did the decoder bias drift while a dense latent cancelled it?",
        "python scripts/dense_latents.py " + shlex.join(sys.argv[1:]),
    )
    record["dense_above"] = DENSE
    record["saes"] = [{"folder": str(folder), **bias_drift(load_sae(folder), held_out)} for folder in args.saes]
    write_check_record(args.out, record)
    for sae in record["saes"]:
        print(sae)


if __name__ == "__main__":
    main()
