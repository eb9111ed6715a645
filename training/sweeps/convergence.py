"""Has each SAE of a sweep stopped improving? Its objective on fixed held-out rows, tracked over training.

``HeldOutTracker`` watches a sweep (a ``SweepObserver`` of ``train_sweep``): every ``every`` steps and
at the last step it evaluates, per SAE, the objective that SAE is trained on (the squared error plus
``sparsity_penalty``: for relu l1 times the codes' L1 norm, for topk nothing), FVU and L0 on the same
held-out rows, encoded as at inference, and writes them as lines of ``heldout_log.jsonl`` in the sweep
folder. The same rows at every point make the curve free of batch noise, so a flat stretch means the
SAE has stopped improving rather than that the noise hides it.

``convergence_report`` reads the log: per SAE, how much the held-out objective fell over the last
stretch of training before the learning rate starts to decay (``window`` of the schedule, e.g. from
50% to 70% of it), relative to its value at the decay's start. An SAE whose objective fell by less than
``tolerance`` there counts as converged: at its peak learning rate, more training was no longer buying
anything. On resume the log is cut back to the step training restarts from, like the train log.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from training.analysis.metrics import evaluate
from training.saes import SparseAutoencoder
from training.sweeps.trainer import SweepRun, TrainConfig

HELDOUT_LOG = "heldout_log.jsonl"
CONVERGED_TOLERANCE = 0.02  # relative fall of the held-out objective over the window that still counts as flat


def heldout_point(sae: SparseAutoencoder, x: torch.Tensor) -> dict[str, float]:
    """The training objective (squared error plus the sparsity penalty), FVU and L0 of ``sae`` on the rows x,
    encoded as at inference."""
    evaluation = evaluate(sae, x)
    return {"objective": evaluation.mse + evaluation.sparsity_penalty, "fvu": evaluation.fvu, "l0": evaluation.l0}


class HeldOutTracker:
    """Records each SAE's held-out objective, FVU and L0 every ``every`` steps and at the end of training."""

    def __init__(self, rows: torch.Tensor, batch_size: int, every: int, log_path: Path) -> None:
        if every <= 0:
            raise ValueError(f"held-out tracking interval must be a positive number of steps, got {every}")
        self.rows = rows
        self.batch_size = batch_size
        self.every = every
        self.log_path = log_path
        self.total = 0

    def start(self, step: int, total: int, runs: list[SweepRun]) -> None:
        """Keep the records of steps up to ``step`` (where a resumed pass restarts) and drop later ones."""
        self.total = total
        kept = [line for line in read_heldout_log(self.log_path) if line["step"] <= step]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text("".join(json.dumps(line) + "\n" for line in kept))

    def after_step(self, step: int, runs: list[SweepRun]) -> None:
        if step % self.every == 0 or step == self.total:
            lines = [
                {
                    "run": run.config.name,
                    "index": index,
                    "step": step,
                    "samples": step * self.batch_size,
                    "fraction": step / self.total,
                    **heldout_point(run.sae, self.rows),
                }
                for index, run in enumerate(runs)
            ]
            with self.log_path.open("a") as log:
                log.write("".join(json.dumps(line) + "\n" for line in lines))


def read_heldout_log(path: Path) -> list[dict]:
    """The lines of a held-out log (empty when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _at(points: list[dict], fraction: float) -> dict:
    """The logged point nearest to ``fraction`` of training."""
    return min(points, key=lambda p: abs(p["fraction"] - fraction))


def convergence_report(
    log: list[dict], window: tuple[float, float], tolerance: float = CONVERGED_TOLERANCE
) -> dict[str, dict]:
    """Per SAE: its held-out objective's relative fall over ``window`` (fractions of training), and whether
    that fall is below ``tolerance``; the final objective, FVU and L0 beside it."""
    by_run: dict[str, list[dict]] = {}
    for line in log:
        by_run.setdefault(line["run"], []).append(line)
    report = {}
    for name, points in by_run.items():
        start, end, last = _at(points, window[0]), _at(points, window[1]), max(points, key=lambda p: p["step"])
        fall = (start["objective"] - end["objective"]) / max(abs(end["objective"]), 1e-12)
        report[name] = {
            "window": [start["fraction"], end["fraction"]],
            "objective_fall": fall,
            "converged": bool(fall < tolerance),
            "objective": last["objective"],
            "fvu": last["fvu"],
            "l0": last["l0"],
        }
    return report


TRACKED_ROWS = 4096  # held-out rows the tracker evaluates: the same rows every time, so few are enough
TRACKED_POINTS = 20  # records per SAE over a sweep


def sweep_tracker(out_dir: Path, held_out: torch.Tensor, train: TrainConfig) -> HeldOutTracker:
    """The tracker a sweep into ``out_dir`` uses: ``TRACKED_POINTS`` records on the first held-out rows."""
    every = max(train.steps // TRACKED_POINTS, 1)
    return HeldOutTracker(held_out[:TRACKED_ROWS], train.batch_size, every, out_dir / HELDOUT_LOG)


def convergence_window(train: TrainConfig, span: float = 0.2) -> tuple[float, float]:
    """The last ``span`` of training before the learning rate starts to decay."""
    decay_start = round(1.0 - train.decay_fraction, 6)
    return round(max(decay_start - span, 0.0), 6), decay_start


def sweep_convergence(out_dir: Path, train: TrainConfig) -> dict:
    """The convergence record of metrics.json for the sweep in ``out_dir`` (empty runs when it kept no log)."""
    window = convergence_window(train)
    return {
        "window": list(window),
        "tolerance": CONVERGED_TOLERANCE,
        "runs": convergence_report(read_heldout_log(out_dir / HELDOUT_LOG), window),
    }


def add_convergence(records: list[dict], convergence: dict) -> None:
    """Give each run record of metrics.json its ``converged`` flag and ``objective_fall`` (None if untracked)."""
    for record in records:
        entry = convergence["runs"].get(record["name"])
        record["converged"] = None if entry is None else entry["converged"]
        record["objective_fall"] = None if entry is None else entry["objective_fall"]
