"""Recovery order on toy data: when does each SAE first find each ground-truth feature?

``RecoveryTracker`` watches a sweep (it is a ``SweepObserver`` of ``train_sweep``): when training
starts, every ``every`` steps and at the last step it writes, per SAE, every ground-truth feature's
best cosine with any decoder atom (one G x dict_size product) as a line of ``recovery_log.jsonl`` in
the sweep folder. The log is the whole record; everything else is a pure function of it:
``read_recoveries`` gives per SAE the curves of MMCS and fraction recovered over samples and the
samples at which each feature first reached the threshold (0.9 cosine, as in ``training.analysis.metrics``),
and ``recovery_report`` adds the Spearman rank correlation between a feature's probability and that
time, with features never recovered ranked last.

On resume the log is cut back to the step training restarts from, as the train log is, so a resumed
run ends with the same records as one that was never interrupted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from training.analysis.metrics import RECOVERED_COSINE, max_cosines
from training.sweeps.trainer import SweepRun

RECOVERY_LOG = "recovery_log.jsonl"
COSINE_DECIMALS = 6  # the log's precision: far below any difference the 0.9 threshold cares about


class RecoveryTracker:
    """Records each SAE's best cosine per ground-truth feature at the start, every ``every`` steps and at the end."""

    def __init__(self, truth: torch.Tensor, batch_size: int, every: int, log_path: Path) -> None:
        if every <= 0:
            raise ValueError(f"recovery tracking interval must be a positive number of steps, got {every}")
        self.truth = truth
        self.batch_size = batch_size
        self.every = every
        self.log_path = log_path
        self.total = 0

    def start(self, step: int, total: int, runs: list[SweepRun]) -> None:
        """Keep the records made before ``step`` (refusing a log that does not cover them); record ``step`` if due."""
        self.total = total
        kept = [line for line in read_recovery_log(self.log_path) if line["step"] < step]
        if step > 0:
            # a resumed pass must find the records of every earlier step at this interval, or its times are wrong
            steps = {line["step"] for line in kept}
            intervals = {line["every"] for line in kept}
            if steps != set(range(0, step, self.every)) or intervals != {self.every}:
                raise ValueError(
                    f"{self.log_path.parent} holds a sweep trained {step} steps without recovery tracking every "
                    f"{self.every} steps from the start: track with the interval it was started with, or use "
                    "another output folder"
                )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text("".join(json.dumps(line) + "\n" for line in kept))
        self.after_step(step, runs)

    def after_step(self, step: int, runs: list[SweepRun]) -> None:
        """Record at step 0 (the initialisation), after every ``every``-th step and after the last one."""
        if step % self.every == 0 or step == self.total:
            self._record(step, runs)

    def _record(self, step: int, runs: list[SweepRun]) -> None:
        lines = []
        for index, run in enumerate(runs):
            cosines = max_cosines(self.truth, run.sae.W_dec)
            lines.append(
                {
                    "run": run.config.name,
                    "index": index,
                    "init": run.config.init,
                    "step": step,
                    "samples": step * self.batch_size,
                    "every": self.every,
                    "cosines": [round(value, COSINE_DECIMALS) for value in cosines.tolist()],
                }
            )
        with self.log_path.open("a") as log:
            log.write("".join(json.dumps(line) + "\n" for line in lines))


def read_recovery_log(path: Path) -> list[dict]:
    """The lines of a recovery log (empty when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class SAERecovery:
    """How one SAE recovered the ground-truth features over training, from its records in a recovery log."""

    name: str
    init: str | None
    threshold: float
    samples: list[int]
    """sample counts of the records, ascending (0 is the initialisation)"""
    cosines: np.ndarray
    """records x G: each feature's best cosine with any atom at each record"""

    @property
    def mmcs(self) -> list[float]:
        return self.cosines.mean(axis=1).tolist()

    @property
    def recovered_fraction(self) -> list[float]:
        return (self.cosines >= self.threshold).mean(axis=1).tolist()

    @property
    def final_cosines(self) -> list[float]:
        return self.cosines[-1].tolist()

    @property
    def first_samples(self) -> list[int | None]:
        """Per feature, the samples of the first record at or above the threshold (None: never)."""
        reached = self.cosines >= self.threshold
        first = reached.argmax(axis=0)
        return [self.samples[row] if reached[row, col] else None for col, row in enumerate(first)]


def read_recoveries(log: list[dict], threshold: float = RECOVERED_COSINE) -> list[SAERecovery]:
    """One ``SAERecovery`` per SAE of a recovery log, in the sweep's order."""
    by_index: dict[int, list[dict]] = {}
    for line in log:
        by_index.setdefault(line["index"], []).append(line)
    recoveries = []
    for index in sorted(by_index):
        lines = sorted(by_index[index], key=lambda line: line["step"])
        recoveries.append(
            SAERecovery(
                name=lines[0]["run"],
                init=lines[0].get("init"),
                threshold=threshold,
                samples=[line["samples"] for line in lines],
                cosines=np.array([line["cosines"] for line in lines], dtype=np.float64),
            )
        )
    return recoveries


def recovery_spearman(probabilities: list[float], first_samples: list[int | None]) -> tuple[float | None, float | None]:
    """Spearman rank correlation (and its p-value) of feature probability with samples to first recovery.

    Features never recovered rank last (tied among themselves), since they took longer than any that
    was. Negative means frequent features are found first. None when either side is constant.
    """
    times = np.array([math.inf if s is None else float(s) for s in first_samples])
    probs = np.asarray(probabilities, dtype=np.float64)
    if len(times) < 2 or np.unique(times).size < 2 or np.unique(probs).size < 2:
        return None, None
    result = spearmanr(probs, times)
    return float(result.statistic), float(result.pvalue)


def _summary(recovery: SAERecovery, probabilities: list[float]) -> dict:
    first = recovery.first_samples
    found = [s for s in first if s is not None]
    rho, p = recovery_spearman(probabilities, first)
    only_found = [(prob, s) for prob, s in zip(probabilities, first, strict=True) if s is not None]
    rho_found, _ = recovery_spearman([prob for prob, _ in only_found], [s for _, s in only_found])
    return {
        "name": recovery.name,
        "init": recovery.init,
        "recovered": len(found),
        "never_recovered": len(first) - len(found),
        "spearman": rho,
        "spearman_p": p,
        "spearman_recovered_only": rho_found,
        "median_samples_to_recover": float(np.median(found)) if found else None,
        "samples_to_recover_all": max(found) if found and len(found) == len(first) else None,
        "final_mmcs": recovery.mmcs[-1],
        "final_recovered_fraction": recovery.recovered_fraction[-1],
    }


def recovery_report(log: list[dict], probabilities: list[float], threshold: float = RECOVERED_COSINE) -> dict:
    """The content of ``recovery.json``: per SAE its curves, per-feature first-recovery samples and summary.

    ``summary`` per SAE (also what metrics.json carries under ``recovery``): features recovered and never
    recovered, the Spearman correlation of probability with recovery samples (never-recovered ranked
    last) and among recovered features only, median samples to recover, and final MMCS and fraction.
    """
    recoveries = read_recoveries(log, threshold)
    every = {line["every"] for line in log}
    return {
        "threshold": threshold,
        "every_steps": min(every) if every else None,
        "probabilities": list(probabilities),
        "saes": [
            {
                "summary": _summary(recovery, probabilities),
                "samples": recovery.samples,
                "mmcs": recovery.mmcs,
                "recovered_fraction": recovery.recovered_fraction,
                "first_samples": recovery.first_samples,
                "final_cosines": recovery.final_cosines,
            }
            for recovery in recoveries
        ],
    }


def recovery_metrics(report: dict, file_name: str) -> dict:
    """The short form of a recovery report that metrics.json carries: threshold, interval and summaries."""
    return {
        "threshold": report["threshold"],
        "every_steps": report["every_steps"],
        "file": file_name,
        "saes": [sae["summary"] for sae in report["saes"]],
    }
