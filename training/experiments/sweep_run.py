"""The SAE sweep, its metrics and its feature index on any run directory's harvested activations.

``train_run`` is ``monosemantic train``: it reads ``<run>/activations/`` (the one file a harvest
writes, or a sharded store, which it finalizes first), rescales rows to unit mean squared norm as the
pipeline does, and trains a preset's sweep (relu over the l1 grid and topk over k, at every dictionary
size) into ``<run>/saes/``, data-parallel when given a ``Replica``. The first process then evaluates
every SAE on held-out rows, writes ``<run>/metrics.json`` in the pipeline's shape with the ``ce_*``
fields null (CE loss recovered needs our own LM in ``<run>/lm/``), and indexes the features into
``<run>/features/`` for the app (a sharded store is merged into one file for that). On a pipeline run
folder it trains the same sweep as ``monosemantic run`` (the same ``sweep.json``), so ``run`` afterwards
reuses it and adds the CE-loss figures.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import torch
from pydantic import BaseModel, Field

from training.activations.harvest import ActivationSource, HarvestConfig, harvest_activations
from training.activations.store import STORE_DIR, STORE_MANIFEST, ShardedSource, finalize_store, merge_store
from training.analysis.metrics import SizedDictionary, evaluate, feature_count_estimate, mmcs_with_larger_records
from training.analysis.objective_check import objective_by_size
from training.data.tokenizer import load_tokenized
from training.experiments.distributed import Replica, agree, train_sweep_distributed
from training.experiments.doubling_report import add_doubling, plot_doubling_heatmaps
from training.experiments.evidence_report import add_evidence
from training.experiments.pipeline import (
    PRESETS,
    PipelineConfig,
    ScaledSource,
    run_record,
    sae_configs,
    sweep_train_config,
)
from training.features.index import FeatureIndexConfig, index_run
from training.figures.sweep import plot_heldout_objective, plot_mmcs_with_larger, plot_training_curve, read_train_log
from training.lm.tinylm import load_lm
from training.runtime.device import devices_record
from training.runtime.threads import threads_record
from training.sweeps.convergence import HELDOUT_LOG, add_convergence, read_heldout_log, sweep_convergence, sweep_tracker
from training.sweeps.trainer import TrainConfig, samples_per_second, train_sweep


class SweepSettings(BaseModel):
    """The sweep ``monosemantic train`` runs: a preset's, with any overrides."""

    preset: str = Field("quick", description="preset the other fields were taken from")
    dict_sizes: list[int] = Field(..., description="SAE dictionary sizes")
    l1: list[float] = Field(..., description="L1 coefficients of the relu SAEs")
    k: list[int] = Field(..., description="k values of the topk SAEs")
    samples: int = Field(..., gt=0, description="activation rows each SAE trains on")
    batch_size: int = Field(..., gt=0, description="rows per SAE step")
    eval_rows: int = Field(..., gt=0, description="held-out rows for L0, FVU and dead latents")
    init_samples: int = Field(16_384, gt=0, description="rows for data-dependent initialisation")
    recipe: str | None = Field(None, description="how the SAEs are trained (None: the preset's)")


def sweep_settings(
    preset: str = "quick",
    dict_sizes: list[int] | None = None,
    samples: int | None = None,
    batch_size: int | None = None,
    init_samples: int | None = None,
    recipe: str | None = None,
) -> SweepSettings:
    """A preset's sweep settings, with the given fields replaced."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(sorted(PRESETS))}")
    base: PipelineConfig = PRESETS[preset]
    return SweepSettings(
        preset=preset,
        dict_sizes=dict_sizes or base.dict_sizes,
        l1=base.l1,
        k=base.k,
        samples=samples or base.sae_samples,
        batch_size=batch_size or base.sae_batch_size,
        eval_rows=base.eval_rows,
        init_samples=init_samples or TrainConfig.model_fields["init_samples"].default,
        recipe=recipe,
    )


def _store(workdir: Path) -> Path:
    return workdir / "activations" / STORE_DIR


def prepare_activations(workdir: Path, layer: int, progress: bool = True) -> None:
    """Make sure ``workdir`` has harvested activations: finalize a sharded store, or harvest our TinyLM's.

    A pipeline run folder whose ``lm/`` is trained but whose activations are not harvested yet gets the
    pipeline's harvest (post-GELU MLP of block ``layer``), so ``monosemantic run`` later reuses it.
    """
    activations = workdir / "activations"
    if (activations / "activations_train.json").exists():
        return
    if _store(workdir).exists():
        finalize_store(_store(workdir))
        return
    if (workdir / "lm" / "model.safetensors").exists() and (workdir / "tokens" / "manifest.json").exists():
        tokens = load_tokenized(workdir / "tokens").train.tokens
        harvest_activations(load_lm(workdir / "lm"), tokens, activations, "train", HarvestConfig(layer=layer), progress)
        return
    raise FileNotFoundError(
        f"{workdir} holds no activations ({activations}/activations_train.json or {STORE_DIR}/): "
        "run `monosemantic harvest --workdir` first"
    )


def activation_source(workdir: Path) -> ActivationSource:
    """The training rows of ``workdir``: its one activation file, else its finalized sharded store."""
    activations = workdir / "activations"
    if (activations / "activations_train.json").exists():
        return ActivationSource(activations)
    if (_store(workdir) / STORE_MANIFEST).exists():
        return ShardedSource(_store(workdir))
    raise FileNotFoundError(f"{workdir} holds no activations: run `monosemantic harvest --workdir` first")


def train_run(
    workdir: Path,
    settings: SweepSettings,
    replica: Replica | None = None,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> dict | None:
    """Train, evaluate and index the sweep on ``workdir``'s activations; the metrics (None on ranks other than 0)."""
    workdir = Path(workdir)
    writer = replica is None or replica.is_writer
    stage_seconds: dict[str, float] = {}
    clock = time.perf_counter()
    layer = PRESETS[settings.preset].layer
    if replica is None:
        prepare_activations(workdir, layer, progress)
    else:
        problem = None
        if writer:
            try:
                prepare_activations(workdir, layer, progress)
            except (ValueError, OSError) as exc:
                problem = str(exc)
        agree(replica, problem)
    base = activation_source(workdir)
    source = ScaledSource(base)
    preset = PRESETS[settings.preset].model_copy(
        update={
            "dict_sizes": settings.dict_sizes,
            "sae_samples": settings.samples,
            "sae_batch_size": settings.batch_size,
            "recipe": settings.recipe or PRESETS[settings.preset].recipe,
        }
    )
    train = sweep_train_config(preset, settings.samples).model_copy(update={"init_samples": settings.init_samples})
    configs = sae_configs(preset, source.dim)
    out = workdir / "saes"
    held_out = source.batch(-1_000_000, settings.eval_rows)
    tracker = sweep_tracker(out, held_out, train)
    if replica is None:
        runs = train_sweep(
            configs, source, train, out, source.spec(), progress=progress, observer=tracker, device=device
        )
    else:
        runs = train_sweep_distributed(configs, source, train, out, replica, source.spec(), progress, observer=tracker)
    stage_seconds["sae_sweep"] = time.perf_counter() - clock
    if not writer:
        return None

    clock = time.perf_counter()
    records, groups = [], defaultdict(list)
    for run in runs:
        evaluation = evaluate(run.sae, held_out, device=device if replica is None else None)
        records.append(run_record(run.sae, evaluation, samples_per_second(run, train)))
        cfg = run.sae.config
        groups[(cfg.arch, cfg.sparsity)].append(SizedDictionary(cfg.dict_size, run.sae.W_dec.clone(), evaluation.dead))
    larger = [
        record
        for (arch, value), sweep in groups.items()
        for record in mmcs_with_larger_records(sweep, {"arch": arch, "k" if arch == "topk" else "l1": value})
    ]
    estimate = feature_count_estimate({f"{arch} {value:g}": sweep for (arch, value), sweep in groups.items()})
    convergence = sweep_convergence(out, train)
    add_convergence(records, convergence)
    stage_seconds["evaluation"] = time.perf_counter() - clock
    manifest = base.manifest
    metrics = {
        "preset": settings.preset,
        "model": manifest.model,
        "module": manifest.module,
        "layer": manifest.layer,
        "lm": None,
        "runs": records,
        "mmcs_with_larger": larger,
        "feature_count_estimate": estimate,
        "convergence": convergence,
        "objective_by_size": objective_by_size(records),
        "config": settings.model_dump(),
        "stage_seconds": stage_seconds,
        **devices_record(device, ("sae_sweep", "evaluation", "feature_index") if replica is None else ()),
        "threads": threads_record(),
    }
    figures = workdir / "figures"
    plot_mmcs_with_larger(larger, figures / "mmcs_with_larger.png", None, estimate)
    log = read_train_log(out / "train_log.jsonl")
    plot_training_curve(log, "fvu", figures / "fvu_vs_samples.png", log_y=True)
    plot_training_curve(log, "l0", figures / "l0_vs_samples.png", log_y=True)
    plot_training_curve(log, "dead_fraction", figures / "dead_fraction_vs_samples.png")
    plot_heldout_objective(
        read_heldout_log(out / HELDOUT_LOG), figures / "heldout_objective_vs_samples.png", convergence["window"][1]
    )

    clock = time.perf_counter()
    if isinstance(base, ShardedSource):
        merge_store(_store(workdir), workdir / "activations")  # the feature index reads one file
    index_config = FeatureIndexConfig()
    index_run(workdir, index_config, progress, device if replica is None else "cpu")
    stage_seconds["feature_index"] = time.perf_counter() - clock
    add_evidence(metrics, workdir, index_config, figures)
    saes = {run.config.name: run.sae for run in runs}
    criteria = index_config.evidence
    add_doubling(metrics, out, saes, held_out, base.manifest.shape[0], criteria.min_firings, criteria.min_contribution)
    plot_doubling_heatmaps(metrics["runs"], figures)
    (workdir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
