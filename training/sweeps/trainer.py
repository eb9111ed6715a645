"""Train a whole sweep of SAEs in one pass: every SAE sees the same batches, read or generated once.

The run folder holds ``sweep.json`` (what is being trained), ``train_log.jsonl`` (metrics over
training, one line per SAE per logged step), ``checkpoint/`` (resumable state) and, when done,
``saes/<name>/`` (weights in safetensors with config.json beside them). Batches are a pure function
of the step, and so is every random choice, so a resumed run ends with the same weights as one that
was never interrupted.

The half-rows SAEs of the doubling test (``half/``) are either snapshots taken mid-run (``half="snapshot"``,
before the learning rate decays) or, with ``half="cooldown"``, complete runs of half the rows: a branch
that leaves the main run where the shorter run's own decay would start, cools down, and is saved. With
``half="cooldown"`` or a set horizon the run also keeps its pre-decay state in ``stable/``; a longer run
with the same horizon resumes from it (``resume_from``) and ends exactly as if it had trained straight through.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

import torch
from pydantic import BaseModel, Field
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from training.analysis.metrics import mmcs
from training.runtime.threads import watch_cores
from training.saes import SAEConfig, SparseAutoencoder, StepStats, build_sae
from training.sweeps.optim import Adam, learning_rate

HALF_DIR = "half"  # each SAE at half its rows, beside saes/ in a sweep's folder
STABLE_DIR = "stable"  # the sweep's state where its learning rate starts to decay
INIT_STEP = -2  # the batch index reserved for data-dependent initialisation


class BatchSource(Protocol):
    """Anything that gives batch number ``step`` deterministically (negative steps are held out)."""

    dim: int

    def batch(self, step: int, batch_size: int) -> torch.Tensor: ...


class SweepObserver(Protocol):
    """Watches a sweep from outside the SAEs' steps (e.g. to record recovery); must not change any state."""

    def start(self, step: int, total: int, runs: list[SweepRun]) -> None:
        """Called once before the first step of this pass: ``step`` steps are done (0 fresh, else resumed)."""
        ...

    def after_step(self, step: int, runs: list[SweepRun]) -> None:
        """Called after every step with the number of steps done, before any checkpoint of that step."""
        ...


class TrainConfig(BaseModel):
    """How long and how a sweep is trained."""

    samples: int = Field(..., gt=0, description="training samples each SAE sees")
    batch_size: int = Field(4096, gt=0, description="samples per step")
    warmup_fraction: float = Field(0.01, ge=0, le=1, description="linear warm-up, as a fraction of steps")
    decay_fraction: float = Field(0.3, ge=0, le=1, description="linear decay to zero over this last fraction")
    init_samples: int = Field(16_384, gt=0, description="samples used for data-dependent initialisation")
    log_every: int = Field(25, gt=0, description="steps between lines of train_log.jsonl")
    checkpoint_every: int = Field(200, gt=0, description="steps between checkpoints")
    horizon_samples: int | None = Field(
        None,
        gt=0,
        description="samples that fix the warm-up, the top-k anneal and fraction-based resampling windows "
        "(default: samples); a doubled run keeps its first run's horizon, so the two agree step for step "
        "until the shorter one cools down",
    )
    half: Literal["snapshot", "cooldown", "none"] = Field(
        "snapshot",
        description="the half-rows SAEs of the doubling test: a mid-run snapshot, a cool-down branch that makes "
        "them complete runs of half the rows (and keeps the pre-decay state in stable/), or none",
    )

    @property
    def steps(self) -> int:
        return max(self.samples // self.batch_size, 1)

    @property
    def horizon_steps(self) -> int:
        return max((self.horizon_samples or self.samples) // self.batch_size, 1)

    @property
    def resumable(self) -> bool:
        """Whether the run keeps its pre-decay state (stable/) for a longer run on its horizon to resume from."""
        return self.half == "cooldown" or self.horizon_samples is not None

    @property
    def decay_start(self) -> int:
        """Steps done when the learning rate starts to decay."""
        return self.steps - int(self.steps * self.decay_fraction)

    def lr(self, step: int, peak: float) -> float:
        """The learning rate of ``step`` in this run, on its horizon."""
        return learning_rate(step, self.steps, peak, self.warmup_fraction, self.decay_fraction, self.horizon_steps)

    def halved(self) -> TrainConfig:
        """The same schedule on half the rows: the run the cool-down branch completes."""
        return self.model_copy(
            update={
                "samples": half_step(self.steps) * self.batch_size,
                "half": "none",
                "horizon_samples": self.horizon_samples or self.samples,
            }
        )


class SweepRun:
    """One SAE of a sweep with its optimiser and the time spent training it."""

    def __init__(self, config: SAEConfig) -> None:
        self.config = config
        self.sae: SparseAutoencoder = build_sae(config)
        self.adam = Adam(self.sae.params())
        self.seconds = 0.0

    def compute_grads(self, x: torch.Tensor, want_stats: bool) -> StepStats | None:
        """The SAE's loss gradients on batch x (a data-parallel run averages them over its processes)."""
        return self.sae.compute_grads(x, want_stats)

    def step(self, x: torch.Tensor, step: int, horizon: int, lr: float, want_stats: bool):
        """One training step on batch x; ``horizon`` is the step count that schedule fractions refer to."""
        start = time.perf_counter()
        sae = self.sae
        sae.set_progress(step, horizon)
        stats = self.compute_grads(x, want_stats)
        sae.clip_grads()
        sae.remove_parallel_decoder_grad()
        self.adam.step(sae.params(), sae.grads, lr)
        sae.normalise_decoder()
        for rows in sae.after_step(x, step, horizon):
            self.adam.reset_latents(rows)
        self.seconds += time.perf_counter() - start
        return stats

    def to(self, device: torch.device | str) -> SweepRun:
        """Move the SAE and its optimiser state to ``device``; returns self."""
        self.sae.to(device)
        self.adam.m = {k: v.to(device) for k, v in self.adam.m.items()}
        self.adam.v = {k: v.to(device) for k, v in self.adam.v.items()}
        return self

    def state(self) -> dict[str, torch.Tensor]:
        return {
            **{f"param.{k}": v for k, v in self.sae.params().items()},
            **{f"buffer.{k}": v for k, v in self.sae.buffers().items()},
            **self.adam.state(),
            "seconds": torch.tensor(self.seconds, dtype=torch.float64),
        }

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.sae.load_tensors({k[6:]: v for k, v in tensors.items() if k.startswith("param.")})
        self.sae.load_tensors({k[7:]: v for k, v in tensors.items() if k.startswith("buffer.")})
        self.adam.load_state(tensors)
        self.seconds = float(tensors["seconds"])


def _sweep_spec(configs: list[SAEConfig], train: TrainConfig, source_spec: dict) -> dict:
    return {
        "train": train.model_dump(),
        "source": source_spec,
        "saes": [c.model_dump() for c in configs],
    }


def _with_defaults(saes: list[dict]) -> list[dict]:
    """Stored SAE configs with the fields added since they were written set to their defaults.

    A field joins SAEConfig with the default that keeps the old behaviour, so a run started before it
    was added is still the same sweep and resumes."""
    filled = []
    for sae in saes:
        try:
            filled.append(json.loads(json.dumps(SAEConfig(**sae).model_dump())))
        except ValueError:
            filled.append(sae)
    return filled


def sweep_conflict(configs: list[SAEConfig], train: TrainConfig, out_dir: Path, source_spec: dict | None) -> str | None:
    """Why ``out_dir`` cannot hold this sweep (it holds one with other settings), or None when it can."""
    spec_path = out_dir / "sweep.json"
    spec = json.loads(json.dumps(_sweep_spec(configs, train, source_spec or {})))
    stored = json.loads(spec_path.read_text()) if spec_path.exists() else None
    if stored is not None and {**stored, "saes": _with_defaults(stored.get("saes", []))} != spec:
        return f"{out_dir} holds a sweep with different settings: choose another output folder or delete it"
    return None


def _write_checkpoint(folder: Path, step: int, runs: list[SweepRun], extra: dict | None = None) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, run in enumerate(runs):
        save_file({k: v.detach().cpu().contiguous() for k, v in run.state().items()}, str(tmp / f"sae_{i}.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"step": step, **(extra or {})}))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _read_checkpoint(folder: Path, runs: list[SweepRun]) -> int:
    step = json.loads((folder / "state.json").read_text())["step"]
    for i, run in enumerate(runs):
        run.load_state(load_file(str(folder / f"sae_{i}.safetensors")))
    return step


def _truncate_log(path: Path, last_step: int) -> None:
    """Drop log lines written after the checkpoint we resume from, so none appears twice."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in keep))


def _stable_record(configs: list[SAEConfig], train: TrainConfig, source_spec: dict) -> dict:
    """What a stable/ checkpoint must agree on with the run that resumes from it."""
    return {
        "saes": [c.model_dump() for c in configs],
        "horizon_samples": train.horizon_samples or train.samples,
        "train": train.model_dump(exclude={"samples", "half", "horizon_samples"}),
        "source": source_spec,
    }


def _start_from_stable(
    folder: Path, configs: list[SAEConfig], train: TrainConfig, source_spec: dict, runs: list[SweepRun], out_dir: Path
) -> int:
    """Load a shorter run's pre-decay state (``folder``) into ``runs`` and carry its logs up to that step.

    The shorter run may have trained more SAEs than this one (e.g. one sparsity of a study's grid is taken
    further): each SAE here must be one of its SAEs, with the same config, horizon, schedule and rows."""
    state = json.loads((folder / "state.json").read_text())
    record = state.get("record") or {}
    mine = json.loads(json.dumps(_stable_record(configs, train, source_spec)))
    theirs = {json.dumps(sae, sort_keys=True): i for i, sae in enumerate(_with_defaults(record.get("saes", [])))}
    positions = [theirs.get(json.dumps(sae, sort_keys=True)) for sae in mine["saes"]]
    if any(i is None for i in positions) or {k: v for k, v in record.items() if k != "saes"} != {
        k: v for k, v in mine.items() if k != "saes"
    }:
        raise ValueError(f"{folder} is the pre-decay state of a different sweep (SAEs, horizon, schedule or rows)")
    step = state["step"]
    if step >= train.decay_start:
        raise ValueError(f"{folder} is at step {step}, past where a run of {train.steps} steps starts to decay")
    index = {run.config.name: i for i, run in enumerate(runs)}
    for run, i in zip(runs, positions, strict=True):
        run.load_state(load_file(str(folder / f"sae_{i}.safetensors")))
    for name in ("train_log.jsonl", "heldout_log.jsonl"):
        lines = [
            {**line, **({"fraction": line["step"] / train.steps} if "fraction" in line else {})}
            for line in map(json.loads, _lines(folder.parent / name))
            if line["step"] <= step and line["run"] in index
        ]
        for line in lines:
            line["index"] = index[line["run"]]
        (out_dir / name).write_text("".join(json.dumps(line) + "\n" for line in lines))
    return step


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _half_complete(out_dir: Path, runs: list[SweepRun]) -> bool:
    return all((out_dir / HALF_DIR / run.config.name / "sae.safetensors").exists() for run in runs)


def _cool_down_branch(
    source: BatchSource,
    train: TrainConfig,
    runs: list[SweepRun],
    out_dir: Path,
    device: torch.device,
    writer: bool,
) -> None:
    """Finish the half-rows run from the main run's state (where its decay starts) and save it to half/;
    the main run's state is restored afterwards, so the branch leaves no trace in it."""
    half = train.halved()
    saved = [{k: v.detach().clone() for k, v in run.state().items()} for run in runs]
    for run in runs:
        run.sae.cooldown_from = half.decay_start
    for step in range(half.decay_start, half.steps):
        x = _to_device(source.batch(step, train.batch_size), device)
        for run in runs:
            run.step(x, step, train.horizon_steps, half.lr(step, run.config.lr), False)
    if writer:
        for run in runs:
            run.sae.save(
                out_dir / HALF_DIR / run.config.name,
                {
                    "samples": half.steps * train.batch_size,
                    "cool_down_from_samples": half.decay_start * train.batch_size,
                },
            )
    for run, state in zip(runs, saved, strict=True):
        run.load_state(state)
        run.sae.cooldown_from = train.decay_start


def train_sweep(
    configs: list[SAEConfig],
    source: BatchSource,
    train: TrainConfig,
    out_dir: Path,
    source_spec: dict | None = None,
    ground_truth: torch.Tensor | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    observer: SweepObserver | None = None,
    make_run: Callable[[SAEConfig], SweepRun] = SweepRun,
    writer: bool = True,
    device: torch.device | str = "cpu",
    resume_from: Path | None = None,
) -> list[SweepRun]:
    """Train every SAE in ``configs`` on the same batches from ``source``; resume if a checkpoint exists.

    ``stop_after`` ends the pass early at that step, after a checkpoint (used to test resumption).
    With ``ground_truth`` (G x d), the log also records MMCS against it. An ``observer`` is told where
    the pass starts and is called after every step; it sees the SAEs but its time is not counted in theirs.
    ``make_run`` builds each SAE's run (a data-parallel sweep passes its own); with ``writer`` False this
    process writes nothing (not the first process of a data-parallel sweep) and only trains. The SAEs
    train on ``device`` (batches are read on the CPU and moved there) and are back on the CPU when returned.
    ``resume_from`` is the ``stable/`` folder of a shorter run of the same sweep and horizon: a fresh pass
    starts from its pre-decay state instead of from scratch.
    """
    device = torch.device(device)
    names = [c.name for c in configs]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ValueError(f"SAEs of one sweep need distinct names; give a tag to tell apart {', '.join(clashes)}")
    if writer:
        out_dir.mkdir(parents=True, exist_ok=True)
        conflict = sweep_conflict(configs, train, out_dir, source_spec)
        if conflict:
            raise ValueError(conflict)
        (out_dir / "sweep.json").write_text(json.dumps(_sweep_spec(configs, train, source_spec or {}), indent=2))
    runs = [make_run(c).to(device) for c in configs]
    for run in runs:
        run.sae.cooldown_from = train.decay_start
    checkpoint = out_dir / "checkpoint"
    log_path = out_dir / "train_log.jsonl"
    total = train.steps
    start_step = 0
    if (checkpoint / "state.json").exists():
        start_step = _read_checkpoint(checkpoint, runs)
        if writer:
            _truncate_log(log_path, start_step)
    elif resume_from is not None:
        start_step = _start_from_stable(resume_from, configs, train, source_spec or {}, runs, out_dir)
    else:
        init_batch = _to_device(source.batch(INIT_STEP, train.init_samples), device)
        for run in runs:
            run.sae.initialise_from_data(init_batch)
        if writer:
            log_path.unlink(missing_ok=True)

    if observer is not None:
        observer.start(start_step, total, runs)
    end = total if stop_after is None else min(stop_after, total)
    branch_at = train.halved().decay_start if train.half == "cooldown" else None
    stable = _stable_record(configs, train, source_spec or {})
    bar = tqdm(
        range(start_step, end),
        initial=start_step,
        total=total,
        disable=not (progress and writer),
        desc="sweep",
        unit="step",
        dynamic_ncols=True,
    )
    cores = watch_cores("sae_sweep", device, bar.write if progress and writer else None)
    with log_path.open("a") if writer else open(os.devnull, "w") as log:
        for step in bar:
            if step == branch_at and not _half_complete(out_dir, runs):
                if writer:
                    _write_checkpoint(checkpoint, step, runs)
                bar.set_postfix_str("half-rows cool-down", refresh=True)
                _cool_down_branch(source, train, runs, out_dir, device, writer)
            if writer and train.resumable and step == train.decay_start:
                _write_checkpoint(out_dir / STABLE_DIR, step, runs, {"record": stable})
            x = _to_device(source.batch(step, train.batch_size), device)
            want = (step + 1) % train.log_every == 0 or step + 1 == total
            lines = []
            for index, run in enumerate(runs):
                lr = train.lr(step, run.config.lr)
                stats = run.step(x, step, train.horizon_steps, lr, want)
                cores.after_step()  # per SAE: one step of a large sweep is long on a busy machine
                if stats is not None:
                    line = {
                        "run": run.config.name,
                        "index": index,
                        "step": step + 1,
                        "samples": (step + 1) * train.batch_size,
                        "lr": lr,
                        **stats.__dict__,
                        "dead_fraction": run.sae.dead_fraction(),
                    }
                    if ground_truth is not None:
                        line["mmcs"] = mmcs(run.sae.W_dec, ground_truth)
                    lines.append(line)
            if lines:
                log.write("".join(json.dumps(line) + "\n" for line in lines))
                log.flush()
                l0s, fvus = [ln["l0"] for ln in lines], [ln["fvu"] for ln in lines]
                bar.set_postfix_str(
                    f"L0 {min(l0s):.1f}-{max(l0s):.1f} FVU {min(fvus):.3f}-{max(fvus):.3f}", refresh=False
                )
            if observer is not None:
                observer.after_step(step + 1, runs)
            if writer and train.half == "snapshot" and step + 1 == half_step(total):
                for run in runs:
                    run.sae.save(out_dir / HALF_DIR / run.config.name, {"samples": (step + 1) * train.batch_size})
            if writer and ((step + 1) % train.checkpoint_every == 0 or step + 1 == end):
                _write_checkpoint(checkpoint, step + 1, runs)
    bar.close()
    cores.close()
    for run in runs:
        run.to("cpu")
    if end == total and writer:
        for run in runs:
            run.sae.save(
                out_dir / "saes" / run.config.name,
                {"samples": total * train.batch_size, "samples_per_s": samples_per_second(run, train)},
            )
    return runs


def _to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch read on the CPU, on ``device`` (through pinned memory, without waiting, on CUDA)."""
    if device.type == "cpu":
        return batch
    return batch.pin_memory().to(device, non_blocking=True)


def half_step(total: int) -> int:
    """The step after which a sweep keeps each SAE as it was at half its rows (for the doubling test)."""
    return max(1, total // 2)


def samples_per_second(run: SweepRun, train: TrainConfig) -> float:
    """Measured training throughput of one SAE: samples seen over the seconds spent in its steps."""
    return train.steps * train.batch_size / max(run.seconds, 1e-9)
