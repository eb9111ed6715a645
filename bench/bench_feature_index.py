"""Speed of the feature index: one dictionary's statistics over a whole activation file.

Indexes one SAE of a finished pipeline run (default: the largest topk and relu dictionaries) and reports
seconds, tokens/s and feature-tokens/s, each beside a reference measured in the same run: one plain pass
that only reads every activation row and encodes it into firing entries, the least any indexer must do.
The index encodes once and replays those entries from memory for its other two passes (when they fit in
``FeatureIndexConfig.cache_entries``), so a ratio near 1 means its bookkeeping is cheap.

    .venv/bin/python bench/bench_feature_index.py [--workdir runs/default] [--sae NAME ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from training.activations.harvest import load_activations
from training.data.tokenizer import load_tokenized
from training.features.index import CorpusTokens, FeatureIndexConfig, compute_feature_index, lm_direct_path
from training.features.stream import encoded_chunks
from training.lm.tinylm import load_lm
from training.saes import load_sae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/default"))
    parser.add_argument("--sae", nargs="*", default=None, help="SAE names (default: the largest of each arch)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folders = sorted((args.workdir / "saes" / "saes").glob("*/sae.safetensors"))
    saes = {p.parent.name: p.parent for p in folders}
    if not saes:
        raise SystemExit(f"{args.workdir} holds no trained SAEs: run `monosemantic run --no-serve` first")
    names = args.sae or [
        max((n for n in saes if n.startswith(arch + "_")), key=lambda n: load_sae(saes[n]).config.dict_size)
        for arch in ("topk", "relu")
        if any(n.startswith(arch + "_") for n in saes)
    ]
    tokenized = load_tokenized(args.workdir / "tokens")
    rows, manifest = load_activations(args.workdir / "activations", "train")
    scale = float(manifest.mean_sq_norm) ** -0.5
    corpus = CorpusTokens.train_split(tokenized)
    direct = lm_direct_path(load_lm(args.workdir / "lm"), manifest.layer)
    config = FeatureIndexConfig()
    print(f"{len(rows):,} tokens, {args.threads} threads")
    for name in names:
        sae = load_sae(saes[name])
        start = time.perf_counter()
        for _ in encoded_chunks(sae, rows, scale, config.chunk_tokens, progress=False):
            pass
        reference = time.perf_counter() - start
        start = time.perf_counter()
        compute_feature_index(
            sae, rows, scale, corpus, tokenized.tokenizer.get_vocab_size(), config, direct, None, False
        )
        seconds = time.perf_counter() - start
        n = sae.config.dict_size
        print(
            f"{name:<22} {n:>5} features  index {seconds:6.1f} s ({len(rows) / seconds:,.0f} tokens/s, "
            f"{len(rows) * n / seconds / 1e6:,.0f}M feature-tokens/s)  one encode pass {reference:5.1f} s  "
            f"ratio {seconds / reference:.2f}"
        )


if __name__ == "__main__":
    main()
