"""Initialisation schemes compared: where each SAE starts and how many samples it needs to reach an MMCS.

The SAEs of a sweep see the same batches, so SAEs that differ only in their decoder initialisation
(``SAEConfig.init``, told apart by ``SAEConfig.tag``) can be compared sample for sample. The MMCS
curve is the sweep's train log (MMCS against the ground truth every ``log_every`` steps) with the
initialisation itself as its first point, rebuilt exactly as the trainer builds it.
"""

from __future__ import annotations

import torch

from training.analysis.metrics import mmcs
from training.saes import build_sae
from training.sweeps.trainer import INIT_STEP, BatchSource, SweepRun, TrainConfig

MMCS_THRESHOLDS = (0.8, 0.9, 0.95, 0.99)


def samples_to_reach(points: list[tuple[int, float]], threshold: float) -> int | None:
    """The first sample count (of points sorted by samples) whose value is >= threshold; None if never."""
    return next((samples for samples, value in sorted(points) if value >= threshold), None)


def initial_decoder(run: SweepRun, source: BatchSource, train: TrainConfig) -> torch.Tensor:
    """The decoder ``run`` started training from: a fresh SAE of its config, initialised on the trainer's init batch."""
    sae = build_sae(run.config)
    sae.initialise_from_data(source.batch(INIT_STEP, train.init_samples))
    return sae.W_dec


def init_comparison(
    runs: list[SweepRun], train_log: list[dict], source: BatchSource, train: TrainConfig, truth: torch.Tensor
) -> list[dict]:
    """Per SAE: its init scheme, MMCS at initialisation and at the end, and samples to reach each MMCS threshold.

    ``samples_to_mmcs`` maps each threshold of ``MMCS_THRESHOLDS`` (as a string key) to the first
    logged sample count at or above it, or None when training never got there.
    """
    rows = []
    for run in runs:
        cfg = run.config
        start = mmcs(initial_decoder(run, source, train), truth)
        points = [(0, start)] + [
            (int(line["samples"]), float(line["mmcs"]))
            for line in train_log
            if line["run"] == cfg.name and line.get("mmcs") is not None
        ]
        rows.append(
            {
                "name": cfg.name,
                "init": cfg.init,
                "arch": cfg.arch,
                "dict_size": cfg.dict_size,
                cfg.sparsity_key: cfg.sparsity,
                "initial_mmcs": start,
                "final_mmcs": mmcs(run.sae.W_dec, truth),
                "samples_to_mmcs": {f"{t:g}": samples_to_reach(points, t) for t in MMCS_THRESHOLDS},
            }
        )
    return rows
