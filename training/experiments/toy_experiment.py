"""The study's toy experiment: a sweep of SAEs over dictionary sizes and sparsities on data with known features.

``run_toy_experiment`` trains the whole sweep in one pass (``out/sweep/``, resumable), evaluates each
SAE on a fixed held-out set, and writes ``out/metrics.json`` and ``out/figures/*.png``. Because the true
number of features G is known here, the feature-count estimate can be checked against it.

With ``inits``, every (size, sparsity) is trained once per decoder initialisation scheme on the same
batches, and ``init_comparison`` says how fast each reaches a given MMCS; with ``track_recovery``, a
``RecoveryTracker`` records when each ground-truth feature is first found (``out/recovery.json``).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from pydantic import BaseModel, Field, model_validator

from training.analysis.metrics import (
    Evaluation,
    SizedDictionary,
    evaluate,
    feature_count_estimate,
    mmcs,
    mmcs_with_larger_records,
    one_to_one_cosine,
    recovered_fraction,
)
from training.data.toy import ToyConfig, ToyData
from training.figures.recovery import write_recovery_figures
from training.figures.sweep import read_train_log, write_figures
from training.runtime.device import devices_record
from training.runtime.threads import threads_record
from training.saes import ARCHS, SAEConfig
from training.sweeps.init_comparison import init_comparison
from training.sweeps.recovery import RECOVERY_LOG, RecoveryTracker, read_recovery_log, recovery_metrics, recovery_report
from training.sweeps.trainer import SweepRun, TrainConfig, samples_per_second, train_sweep

TOPK_ARCHS = ("topk", "batchtopk")
DEFAULT_L1 = (0.01, 0.03, 0.1)
DEFAULT_K = 5
DICT_RATIOS = (0.5, 1.0, 2.0, 4.0)
RECOVERY_FILE = "recovery.json"
InitScheme = Literal["random", "orthogonal", "data"]
INIT_SCHEMES: tuple[str, ...] = get_args(InitScheme)


def default_dict_sizes(n_features: int) -> list[int]:
    """Dictionary sizes 0.5, 1, 2 and 4 times the number of features (at least 1, without repeats)."""
    return sorted({max(1, int(n_features * ratio)) for ratio in DICT_RATIOS})


class ToyExperimentConfig(BaseModel):
    """One toy sweep: the data, the dictionaries and how long they train.

    Left out, ``dict_sizes`` defaults to ``default_dict_sizes(G)`` and the sparsity to ``DEFAULT_K``
    (top-k family) or ``DEFAULT_L1`` (the other archs).
    """

    toy: ToyConfig = Field(default_factory=ToyConfig, description="the toy data generator")
    dict_sizes: list[int] = Field(..., min_length=1, description="dictionary sizes of the sweep")
    arch: str = Field("relu", description="SAE architecture, one of training.saes.ARCHS")
    l1: list[float] | None = Field(None, description="sparsity coefficients (relu, tied, jumprelu)")
    k: int | None = Field(None, gt=0, description="active latents per sample (topk, batchtopk)")
    samples: int = Field(2_000_000, gt=0, description="training samples each SAE sees")
    batch_size: int = Field(256, gt=0, description="samples per training step")
    seed: int = Field(0, description="seed of the SAEs' initialisation and resampling")
    eval_samples: int = Field(20_000, gt=0, description="size of the held-out evaluation set")
    inits: list[InitScheme] | None = Field(
        None, description="decoder initialisation schemes, one SAE each (tagged with it); None: the arch's default"
    )
    track_recovery: int | None = Field(
        None, gt=0, description="steps between records of each feature's best cosine; None: no recovery tracking"
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        arch = data.get("arch", "relu")
        if data.get("dict_sizes") is None:
            toy = data.get("toy")
            toy = toy if isinstance(toy, ToyConfig) else ToyConfig(**(toy or {}))
            data["dict_sizes"] = default_dict_sizes(toy.n_features)
        if arch in TOPK_ARCHS and data.get("k") is None and data.get("l1") is None:
            data["k"] = DEFAULT_K
        if arch not in TOPK_ARCHS and data.get("l1") is None and data.get("k") is None:
            data["l1"] = list(DEFAULT_L1)
        return data

    @model_validator(mode="after")
    def _check(self) -> ToyExperimentConfig:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}: choose one of {', '.join(ARCHS)}")
        if any(size <= 0 for size in self.dict_sizes):
            raise ValueError(f"dictionary sizes must be positive, got {self.dict_sizes}")
        if len(set(self.dict_sizes)) != len(self.dict_sizes):
            raise ValueError(f"dictionary sizes repeat: {self.dict_sizes}")
        if self.arch in TOPK_ARCHS:
            if self.l1 is not None:
                raise ValueError(f"arch {self.arch} takes k, not l1")
            if self.k is None:
                raise ValueError(f"arch {self.arch} needs k")
            if self.k > min(self.dict_sizes):
                raise ValueError(f"k={self.k} exceeds the smallest dictionary size {min(self.dict_sizes)}")
        else:
            if self.k is not None:
                raise ValueError(f"arch {self.arch} takes l1, not k")
            if not self.l1:
                raise ValueError(f"arch {self.arch} needs at least one l1 value")
            if any(not math.isfinite(v) or v < 0 for v in self.l1):
                raise ValueError(f"l1 values must be finite and >= 0, got {self.l1}")
            if len(set(self.l1)) != len(self.l1):
                raise ValueError(f"l1 values repeat: {self.l1}")
        if self.inits is not None and (not self.inits or len(set(self.inits)) != len(self.inits)):
            raise ValueError(f"initialisation schemes must be distinct and at least one, got {self.inits}")
        if self.toy.mean_active > self.toy.n_features:
            raise ValueError(
                f"mean_active {self.toy.mean_active:g} exceeds the number of features {self.toy.n_features}"
            )
        return self

    @property
    def sparsity_key(self) -> str:
        return "k" if self.arch in TOPK_ARCHS else "l1"

    def sparsities(self) -> list[float] | list[int]:
        """The sparsity settings of the sweep, ascending."""
        if self.sparsity_key == "k":
            return [self.k] if self.k is not None else []
        return sorted(self.l1 or [])

    def sae_configs(self) -> list[SAEConfig]:
        """One SAE config per (init scheme, sparsity, size), grouped by scheme then sparsity, sizes ascending.

        Without ``inits`` each SAE takes its arch's default initialisation and no tag.
        """
        schemes = [{"init": init, "tag": init} for init in self.inits] if self.inits else [{}]
        return [
            SAEConfig(
                arch=self.arch,
                d_in=self.toy.dim,
                dict_size=size,
                seed=self.seed,
                **{self.sparsity_key: value},
                **scheme,
            )
            for scheme in schemes
            for value in self.sparsities()
            for size in sorted(self.dict_sizes)
        ]

    def train_config(self) -> TrainConfig:
        """The trainer settings of the sweep."""
        return TrainConfig(samples=self.samples, batch_size=self.batch_size)


def _run_record(run: SweepRun, train: TrainConfig, toy: ToyData, evaluation: Evaluation) -> dict:
    cfg = run.config
    decoder = run.sae.W_dec
    return {
        "arch": cfg.arch,
        "dict_size": cfg.dict_size,
        cfg.sparsity_key: cfg.sparsity,
        "mmcs": mmcs(decoder, toy.features),
        "l0": evaluation.l0,
        "fvu": evaluation.fvu,
        "dead_fraction": evaluation.dead_fraction,
        "samples_per_s": samples_per_second(run, train),
        "one_to_one_cosine": one_to_one_cosine(decoder, toy.features),
        "recovered_fraction": recovered_fraction(decoder, toy.features),
        "samples": train.steps * train.batch_size,
        "name": cfg.name,
        "init": cfg.init,
        "tag": cfg.tag,
    }


def run_toy_experiment(
    config: ToyExperimentConfig, out: Path, progress: bool = True, device: torch.device | str = "cpu"
) -> dict:
    """Train, evaluate and plot the sweep of ``config`` under ``out``; the metrics.json dict it wrote.

    Resumes a sweep already started in ``out/sweep``; raises ValueError when that folder holds a sweep
    with other settings.
    """
    toy = ToyData(config.toy)
    train = config.train_config()
    recovery_log = out / "sweep" / RECOVERY_LOG
    tracker = None
    if config.track_recovery is not None:
        tracker = RecoveryTracker(toy.features, train.batch_size, config.track_recovery, recovery_log)
    runs = train_sweep(
        config.sae_configs(),
        toy,
        train,
        out / "sweep",
        source_spec=config.toy.model_dump(),
        ground_truth=toy.features,
        progress=progress,
        observer=tracker,
        device=device,
    )
    x_eval = toy.evaluation_set(config.eval_samples)
    key = config.sparsity_key
    records: list[dict] = []
    # SAEs that differ only in their tag (init scheme) are separate size sweeps
    by_setting: dict[tuple[float | int, str], list[tuple[SweepRun, SizedDictionary]]] = defaultdict(list)
    for run in runs:
        evaluation = evaluate(run.sae, x_eval, device=device)
        records.append(_run_record(run, train, toy, evaluation))
        sized = SizedDictionary(run.config.dict_size, run.sae.W_dec.clone(), evaluation.dead)
        by_setting[(run.config.sparsity, run.config.tag)].append((run, sized))

    def labels(value: float | int, tag: str) -> dict:
        return {"arch": config.arch, key: value, **({"init": tag} if tag else {})}

    larger_records = [
        record
        for (value, tag), group in by_setting.items()
        for record in mmcs_with_larger_records([sized for _, sized in group], labels(value, tag))
    ]
    estimate = feature_count_estimate(
        {
            f"{key}={value:g}" + (f" init={tag}" if tag else ""): [sized for _, sized in group]
            for (value, tag), group in by_setting.items()
        }
    )
    train_log = read_train_log(out / "sweep" / "train_log.jsonl")
    report = None
    if tracker is not None:
        report = recovery_report(read_recovery_log(recovery_log), toy.probabilities.tolist())
    metrics = {
        "runs": records,
        "mmcs_with_larger": larger_records,
        "feature_count_estimate": estimate,
        "config": config.model_dump(),
        **devices_record(device, ("sae_sweep", "evaluation"), stages=("sae_sweep", "evaluation")),
        "threads": threads_record(),
        "true_feature_count": config.toy.n_features,
        "init_comparison": init_comparison(runs, train_log, toy, train, toy.features),
        "recovery": None if report is None else recovery_metrics(report, RECOVERY_FILE),
    }
    out.mkdir(parents=True, exist_ok=True)
    if report is not None:
        (out / RECOVERY_FILE).write_text(json.dumps(report))
    else:
        (out / RECOVERY_FILE).unlink(missing_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_figures(metrics, out / "figures", out / "sweep" / "train_log.jsonl")
    write_recovery_figures(metrics["init_comparison"], train_log, report, out / "figures")
    return metrics
