"""The whole offline experiment on a tiny LM: corpus -> tokenizer -> LM -> activations -> SAE sweep -> metrics.

Every step writes into its own folder of the run directory and is skipped when its output already
exists for the same settings and inputs (the tokenizer, LM trainer, harvester and sweep trainer each
check this themselves), so a killed run continues where it stopped. ``metrics.json`` at the top of the
run directory has the same shape as the toy experiment's, with CE-loss recovered per SAE, so LM and toy
results can be put side by side. The last step indexes every SAE's features (``training.features.index``)
for the app to ingest.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, Field

from training.activations.harvest import ActivationSource, HarvestConfig, harvest_activations
from training.analysis.metrics import SizedDictionary, evaluate, feature_count_estimate, mmcs_with_larger_records
from training.analysis.mlp_usage import lm_mlp_usage
from training.analysis.objective_check import objective_by_size
from training.data.corpus import corpus_subset, load_corpus
from training.data.tokenizer import TokenizeConfig, tokenize_corpus
from training.experiments.doubling_report import add_doubling, plot_doubling_heatmaps
from training.experiments.evidence_report import add_evidence
from training.experiments.toy_twin import run_toy_twin
from training.features.index import FeatureIndexConfig, index_run
from training.figures.sweep import (
    plot_heatmap,
    plot_heldout_objective,
    plot_mmcs_with_larger,
    plot_training_curve,
    read_train_log,
)
from training.lm.tinylm import TinyLMConfig, TrainLMConfig, eval_windows, splice_losses, train_lm
from training.runtime.device import devices_record, moved_copy
from training.runtime.threads import threads_record
from training.saes import SAEConfig, SparseAutoencoder
from training.saes.recipes import RECIPES, recipe_sae_config
from training.sweeps.convergence import HELDOUT_LOG, add_convergence, read_heldout_log, sweep_convergence, sweep_tracker
from training.sweeps.trainer import STABLE_DIR, SweepRun, TrainConfig, samples_per_second, train_sweep


class PipelineConfig(BaseModel):
    """One preset of the LM pipeline."""

    name: str = Field(..., description="preset name")
    max_documents: int | None = Field(None, gt=0, description="use only the first N documents of the corpus")
    vocab_size: int = Field(4096, gt=0, description="BPE vocabulary size")
    lm_steps: int = Field(700, gt=0, description="LM training steps")
    lm_batch_size: int = Field(32, gt=0, description="LM contexts per step")
    layer: int = Field(2, ge=0, description="block whose post-GELU MLP activations the SAEs learn")
    dict_sizes: list[int] = Field(..., description="SAE dictionary sizes")
    l1: list[float] = Field(..., description="L1 coefficients of the relu SAEs")
    k: list[int] = Field(..., description="k values of the topk SAEs")
    sae_samples: int = Field(..., gt=0, description="activation rows each SAE trains on")
    sae_batch_size: int = Field(1024, gt=0, description="rows per SAE step")
    recipe: Literal["v1", "v2", "v3", "v4", "v5", "v6"] = Field(
        "v5",
        description="how the SAEs are trained (training.saes.recipes): v2 scales the learning rate with the "
        "dictionary, revives latents until the cool-down, and doubles by resuming; v3 adds relu with "
        "norm-penalised atoms (Anthropic's April 2024 update) and top-k without a k anneal; v4 (a candidate, "
        "unstable over 6M rows) adds top-k's rescue of latents negative on every row and a top-k rate of at "
        "most 2.1e-3; v5 keeps v3's rates and rescues those latents by raising only their encoder bias; "
        "v6 is v5 with relu at 3e-3 up to 4096 latents; v1 is the first study record's",
    )
    resample_until: float = Field(
        0.4,
        ge=0,
        le=1,
        description="recipe v1: relu SAEs resample dead latents only in this first fraction of training, which "
        "leaves the stretch before the learning rate decays free of resampling shocks",
    )
    eval_rows: int = Field(20_000, gt=0, description="held-out rows for L0, FVU and dead latents")
    splice_tokens: int = Field(32_768, gt=0, description="validation tokens for CE-loss recovered")
    lm_patience: int | None = Field(
        None, gt=0, description="early stopping of the LM: validation evaluations without a gain before it stops"
    )
    lm_eval_every: int = Field(250, gt=0, description="LM steps between validation evaluations")
    lm_eval_sequences: int = Field(128, gt=0, description="validation sequences of each LM evaluation")
    lm_seed: int = Field(0, description="seed of the LM's initialisation and batches")
    lm_init: Literal["gpt2", "fan_in"] = Field(
        "fan_in",
        description="LM weight initialisation (TrainLMConfig.init); with gpt2's std 0.02 the 16-wide LM leaves most "
        "MLP neurons unused (docs/experiment.md)",
    )
    lm_weight_decay: float = Field(
        0.1,
        ge=0,
        description="AdamW weight decay of the LM's weight matrices (lm.mlp_usage in metrics.json shows "
        "whether it switched off MLP neurons)",
    )
    max_sae_samples: int | None = Field(
        None,
        gt=0,
        description="when set, the sweep is trained again on twice the rows while any SAE fails the doubling test, "
        "up to this many rows; SAEs still moving at the cap are named in metrics.json",
    )
    toy_twin_samples: int = Field(
        300_000, gt=0, description="samples per SAE of the toy twin (same sizes and l1 grid, d = the site's width)"
    )


PRESETS: dict[str, PipelineConfig] = {
    "quick": PipelineConfig(
        name="quick",
        max_documents=40,
        vocab_size=1024,
        lm_steps=150,
        lm_batch_size=16,
        dict_sizes=[32, 64, 128],
        l1=[0.1, 0.3],
        k=[8],
        sae_samples=150_000,
        eval_rows=5_000,
        splice_tokens=8_192,
        toy_twin_samples=20_000,
    ),
    "default": PipelineConfig(
        name="default",
        lm_steps=700,
        dict_sizes=[32, 64, 128, 256, 512, 1024, 2048, 4096],
        l1=[0.1, 0.3],
        k=[8],
        sae_samples=2_000_000,
        sae_batch_size=512,
    ),
    # The study's experiment trained until its outputs hold: the LM to its best validation loss (at most
    # 4,000 steps), then relu and topk SAEs of 128-4096 latents on 3M rows, trained again on twice the rows
    # while any fails the doubling test, up to 12M (3 + 6 + 12M rows). Rows, not more sparsity settings, get
    # the budget. With recipe v5 it takes about 49 minutes on 2 cores (docs/results/study/provenance.md).
    "study": PipelineConfig(
        name="study",
        lm_steps=4000,
        lm_patience=4,
        lm_eval_every=250,
        lm_eval_sequences=512,
        dict_sizes=[128, 256, 512, 1024, 2048, 4096],
        l1=[0.1, 0.3],
        k=[8],
        sae_samples=3_000_000,
        max_sae_samples=12_000_000,
        sae_batch_size=512,
        toy_twin_samples=1_000_000,
    ),
}


class ScaledSource:
    """An activation source rescaled so that rows have unit mean squared norm.

    Sparsity coefficients then mean the same on any model, site or corpus (and on the toy data).
    """

    def __init__(self, source: ActivationSource) -> None:
        self.source = source
        self.dim = source.dim
        self.scale = float(source.manifest.mean_sq_norm) ** -0.5

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        return self.source.batch(step, batch_size).mul_(self.scale)

    def spec(self) -> dict:
        return {**self.source.spec(), "scale": self.scale}


def lm_train_config(config: PipelineConfig) -> TrainLMConfig:
    """How the preset trains its LM (early stopping when it sets a patience)."""
    return TrainLMConfig(
        steps=config.lm_steps,
        batch_size=config.lm_batch_size,
        patience=config.lm_patience,
        eval_every=config.lm_eval_every,
        eval_sequences=config.lm_eval_sequences,
        weight_decay=config.lm_weight_decay,
        init=config.lm_init,
        seed=config.lm_seed,
    )


def sweep_until_holds(
    config: PipelineConfig,
    source: ScaledSource,
    held_out: torch.Tensor,
    workdir: Path,
    index_rows: int,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> tuple[list[SweepRun], TrainConfig, list[dict]]:
    """Train the preset's sweep; with ``max_sae_samples``, again on twice the rows while any SAE still moves.

    Each finished round that failed the doubling test is kept as ``saes_rows_<N>/`` (so an interrupted
    run skips it when it resumes) and the next round trains in ``saes/``: afresh with recipe v1, from the
    previous round's pre-decay state (``saes_rows_<N>/stable``) with v2, whose first round also finishes
    its half-rows SAEs as complete runs. The rounds say which SAEs moved at each row count; the last
    round's moving SAEs hit the cap.
    """
    samples, rounds = config.sae_samples, []
    configs = sae_configs(config, source.dim)
    recipe = RECIPES[config.recipe]
    while True:
        archived = workdir / f"saes_rows_{samples}"
        if config.max_sae_samples is not None and archived.is_dir() and samples * 2 <= config.max_sae_samples:
            rounds.append(json.loads((archived / "doubling_round.json").read_text()))
            samples *= 2
            continue
        previous = previous_round(workdir, samples)
        resume = latest_stable(workdir, samples) if recipe.cooldown_half else None
        train = sweep_train_config(config, samples)
        sweep_dir = workdir / "saes"
        runs = train_sweep(
            configs,
            source,
            train,
            sweep_dir,
            source_spec=source.spec(),
            progress=progress,
            observer=sweep_tracker(sweep_dir, held_out, train),
            device=device,
            resume_from=resume,
        )
        if config.max_sae_samples is None:
            return runs, train, rounds
        probe = {"runs": [{"name": run.config.name} for run in runs]}
        add_doubling(
            probe, sweep_dir, {run.config.name: run.sae for run in runs}, held_out, index_rows, half_dir=previous
        )
        moving = [r["name"] for r in probe["runs"] if r["holds"] is False]
        round_record = {"samples": samples, "moving": moving}
        rounds.append(round_record)
        if not moving or samples * 2 > config.max_sae_samples:
            round_record["hit_cap"] = moving
            return runs, train, rounds
        (sweep_dir / "doubling_round.json").write_text(json.dumps(round_record))
        sweep_dir.rename(archived)
        samples *= 2


def sweep_train_config(config: PipelineConfig, samples: int) -> TrainConfig:
    """How the round of ``samples`` rows is trained: with recipe v2 on the first round's horizon, its
    half-rows SAEs finished by a cool-down branch only in the first round (later rounds' half is the last)."""
    if not RECIPES[config.recipe].cooldown_half:
        return TrainConfig(samples=samples, batch_size=config.sae_batch_size)
    first = samples == config.sae_samples
    return TrainConfig(
        samples=samples,
        batch_size=config.sae_batch_size,
        horizon_samples=config.sae_samples,
        half="cooldown" if first else "none",
    )


def latest_stable(workdir: Path, samples: int) -> Path | None:
    """The pre-decay state of the longest finished round shorter than ``samples`` rows that kept one.

    Any earlier round's state gives the same end (the schedule is the same up to each run's own decay), the
    longest just leaves the fewest steps to train again."""
    rows = samples // 2
    while rows > 0:
        stable = Path(workdir) / f"saes_rows_{rows}" / STABLE_DIR
        if (stable / "state.json").exists():
            return stable
        rows //= 2
    return None


def previous_round(workdir: Path, samples: int) -> Path | None:
    """The SAEs of the finished round on half these rows (``saes_rows_<N>/saes``), when the sweep had one."""
    folder = Path(workdir) / f"saes_rows_{samples // 2}" / "saes"
    return folder if folder.is_dir() else None


def sae_configs(config: PipelineConfig, d_in: int) -> list[SAEConfig]:
    """The sweep: relu over the l1 grid and topk over k, at every dictionary size, as the preset's recipe sets them."""
    recipe = RECIPES[config.recipe]
    if recipe.resample_stop == "fraction":
        recipe = recipe.model_copy(update={"resample_until": config.resample_until})
    relu = [recipe_sae_config(recipe, "relu", d_in, n, l1=l1) for l1 in config.l1 for n in config.dict_sizes]
    topk = [recipe_sae_config(recipe, "topk", d_in, n, k=k) for k in config.k for n in config.dict_sizes if k <= n]
    return relu + topk


def run_record(sae: SparseAutoencoder, evaluation, sps: float, losses=None) -> dict:
    """One SAE's line of ``metrics.json``: L0, FVU, dead fraction, throughput and CE losses (None without an LM)."""
    cfg = sae.config
    return {
        "arch": cfg.arch,
        "dict_size": cfg.dict_size,
        cfg.sparsity_key: cfg.sparsity,
        "name": cfg.name,
        "l0": evaluation.l0,
        "fvu": evaluation.fvu,
        "dead_fraction": evaluation.dead_fraction,
        "alive": int((~evaluation.dead).sum()),
        "objective": evaluation.mse + evaluation.sparsity_penalty,
        "samples_per_s": sps,
        "ce_clean": None if losses is None else losses.clean,
        "ce_spliced": None if losses is None else losses.spliced,
        "ce_zero_ablated": None if losses is None else losses.zero_ablated,
        "ce_recovered": None if losses is None else losses.recovered,
    }


def run_pipeline(
    config: PipelineConfig,
    workdir: Path,
    corpus_path: Path | None = None,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> dict:
    """Run (or resume) every step of the LM experiment in workdir; the metrics.json dict it wrote."""
    workdir.mkdir(parents=True, exist_ok=True)
    stage_seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        stage_seconds[stage] = now - clock
        clock = now

    corpus = corpus_subset(load_corpus(corpus_path), config.max_documents)
    tokens = tokenize_corpus(corpus, workdir / "tokens", TokenizeConfig(vocab_size=config.vocab_size), progress)
    lap("corpus_and_tokenizer")
    lm_config = TinyLMConfig(vocab_size=tokens.tokenizer.get_vocab_size())
    trained = train_lm(
        lm_config,
        tokens.train.tokens,
        tokens.val.tokens,
        workdir / "lm",
        lm_train_config(config),
        progress=progress,
        device=device,
    )
    model = trained.model
    mlp_usage = [u.numbers() for u in lm_mlp_usage(model, eval_windows(tokens.val.tokens, lm_config.context, 200))]
    lap("lm")
    harvest = HarvestConfig(layer=config.layer)
    harvest_activations(model, tokens.train.tokens, workdir / "activations", "train", harvest, progress, device)
    lap("harvest")
    source = ScaledSource(ActivationSource(workdir / "activations"))
    held_out = source.batch(-1_000_000, config.eval_rows)
    runs, train, doubling_rounds = sweep_until_holds(
        config, source, held_out, workdir, len(tokens.train.tokens), progress, device
    )

    lap("sae_sweep")
    splice_stream = torch.as_tensor(tokens.val.tokens[: config.splice_tokens].astype("int64"))
    records, groups = [], defaultdict(list)
    baselines: tuple[float, float] | None = None
    eval_model = moved_copy(model, device)
    for run in runs:
        sae = run.sae
        on_device = moved_copy(sae, device)
        evaluation = evaluate(on_device, held_out)

        def reconstruct(hidden: torch.Tensor, sae: SparseAutoencoder = on_device) -> torch.Tensor:
            return sae.reconstruct(hidden * source.scale) / source.scale

        losses = splice_losses(eval_model, splice_stream, config.layer, reconstruct, baselines=baselines)
        baselines = (losses.clean, losses.zero_ablated)
        records.append(run_record(sae, evaluation, samples_per_second(run, train), losses))
        groups[(sae.config.arch, sae.config.sparsity)].append(
            SizedDictionary(sae.config.dict_size, sae.W_dec.clone(), evaluation.dead)
        )

    larger = [
        record
        for (arch, value), sweep in groups.items()
        for record in mmcs_with_larger_records(sweep, {"arch": arch, "k" if arch == "topk" else "l1": value})
    ]
    convergence = sweep_convergence(workdir / "saes", train)
    add_convergence(records, convergence)
    lap("evaluation")
    estimate = feature_count_estimate({f"{arch} {value:g}": sweep for (arch, value), sweep in groups.items()})
    metrics = {
        "preset": config.name,
        "layer": config.layer,
        "lm": {**json.loads((workdir / "lm" / "lm_metrics.json").read_text()), "mlp_usage": mlp_usage},
        "runs": records,
        "mmcs_with_larger": larger,
        "feature_count_estimate": estimate,
        "convergence": convergence,
        "objective_by_size": objective_by_size(records),
        "config": config.model_dump(),
        "stage_seconds": stage_seconds,
        **devices_record(device, computed_on_device=("lm", "harvest", "sae_sweep", "evaluation", "feature_index")),
        "threads": threads_record(),
        "doubling_rounds": doubling_rounds,
    }
    (workdir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    figures = workdir / "figures"
    for arch in sorted({r["arch"] for r in records}):
        for metric in ("dead_fraction", "fvu", "ce_recovered"):
            plot_heatmap(records, metric, arch, figures / f"heatmap_{metric}_{arch}.png")
    plot_mmcs_with_larger(larger, figures / "mmcs_with_larger.png", None, estimate)
    log = read_train_log(workdir / "saes" / "train_log.jsonl")
    plot_training_curve(log, "fvu", figures / "fvu_vs_samples.png", log_y=True)
    plot_training_curve(log, "l0", figures / "l0_vs_samples.png", log_y=True)
    plot_training_curve(log, "dead_fraction", figures / "dead_fraction_vs_samples.png")
    heldout = read_heldout_log(workdir / "saes" / HELDOUT_LOG)
    plot_heldout_objective(heldout, figures / "heldout_objective_vs_samples.png", convergence["window"][1])
    clock = time.perf_counter()
    index_config = FeatureIndexConfig()
    index_run(workdir, index_config, progress, device)
    metrics["stage_seconds"]["feature_index"] = time.perf_counter() - clock
    add_evidence(metrics, workdir, index_config, figures)
    saes = {run.config.name: run.sae for run in runs}
    index_rows = len(tokens.train.tokens)
    criteria = index_config.evidence
    previous = previous_round(workdir, train.samples)
    add_doubling(
        metrics, workdir / "saes", saes, held_out, index_rows, criteria.min_firings, criteria.min_contribution, previous
    )
    plot_doubling_heatmaps(metrics["runs"], figures)
    clock = time.perf_counter()
    metrics["toy_vs_lm"] = run_toy_twin(
        metrics, source.dim, config.dict_sizes, config.l1, config.toy_twin_samples, workdir, progress, device
    )
    metrics["stage_seconds"]["toy_twin"] = time.perf_counter() - clock
    (workdir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
