"""Data-parallel training over several processes with torch.distributed, as launched by ``torchrun``.

SAE sweeps: batch ``step`` is still a pure function of the step; every process reads the whole batch,
computes the hand-written gradients on its own equal slice of it, and the gradients are averaged with
one all-reduce per SAE and step, together with which latents fired (so dead-latent counters stay those
of the whole batch) and any float buffers (the BatchTopK threshold). Every process then takes the
same Adam step, and resampling sees the whole batch, so all processes hold the same weights. Only the
first process (rank 0) writes: ``sweep.json``, the log, checkpoints and weights are those of
``train_sweep``, so a distributed checkpoint resumes in one process and the other way round. SAEs
train on the CPU, so sweeps use the gloo backend.

Language model: ``train_lm_distributed`` trains the TinyLM with DistributedDataParallel on slices of
the same batches as ``train_lm`` and writes the same folder (checkpoint, log, weights, metrics), with
nccl and one GPU per process when CUDA is there, gloo on CPUs otherwise.

What differs from one process: sums are taken in another order, so weights agree to rounding (the
tests check 1e-4 after tens of steps), not bit for bit; BatchTopK picks its top activations within
each process's slice and the aux-k loss of top-k SAEs is normalised by each slice's residual energy;
the ``fvu`` in the training log is the mean of the processes' values. The batch size must divide by
the number of processes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from training.data.corpus import CorpusError, corpus_subset, load_corpus
from training.data.tokenizer import TokenizeConfig, load_tokenized, tokenize_corpus
from training.experiments.pipeline import PipelineConfig, lm_train_config
from training.lm.tinylm import (
    LMMetrics,
    TinyLMConfig,
    TrainedLM,
    TrainLMConfig,
    eval_windows,
    evaluate_lm,
    initial_lm,
    lm_data_record,
    lm_optimizer,
    load_lm,
    lr_at,
    mean_loss,
    next_token_loss,
    read_lm_checkpoint,
    same_lm_settings,
    sample_batch,
    save_lm,
    train_lm,
    truncate_log,
    write_lm_checkpoint,
)
from training.saes import SAEConfig, StepStats
from training.sweeps.trainer import BatchSource, SweepObserver, SweepRun, TrainConfig, sweep_conflict, train_sweep


@dataclass(frozen=True)
class Replica:
    """This process's place in a data-parallel group."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def slice(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's equal share of a batch (rows rank*B/W up to (rank+1)*B/W)."""
        size = batch.shape[0] // self.world
        return batch[self.rank * size : (self.rank + 1) * size]


def launched_by_torchrun() -> bool:
    """True when this process is one of several started by torchrun (WORLD_SIZE > 1 in the environment)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_replica(backend: str | None = None) -> Replica:
    """Join the process group torchrun described in the environment (or reuse one already joined).

    ``backend`` defaults to nccl when CUDA is there, else gloo; SAE sweeps always pass gloo.
    """
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if dist.get_backend() == "nccl":
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        return Replica(rank, world, torch.device("cuda", local))
    return Replica(rank, world, torch.device("cpu"))


def _check_batch(batch_size: int, replica: Replica) -> None:
    if batch_size % replica.world:
        raise ValueError(
            f"batch size {batch_size} does not divide among {replica.world} processes: "
            f"choose a multiple of {replica.world}"
        )


def agree(replica: Replica, message: str | None) -> None:
    """Raise ValueError on every process when rank 0 found a problem, so none waits for the others."""
    box = [message]
    dist.broadcast_object_list(box, src=0)
    if box[0]:
        raise ValueError(box[0])


class DataParallelRun(SweepRun):
    """One SAE of a sweep whose gradients are averaged over the processes of a data-parallel group."""

    def __init__(self, config: SAEConfig, replica: Replica) -> None:
        super().__init__(config)
        self.replica = replica

    def compute_grads(self, x: torch.Tensor, want_stats: bool) -> StepStats | None:
        sae, world = self.sae, self.replica.world
        counters = sae.samples_since_fired
        before = counters.clone()
        stats = sae.compute_grads(self.replica.slice(x), want_stats)
        fired_here = (counters == 0).float()  # a latent's counter is reset to 0 in the step it fires
        floats = {k: v for k, v in sae.buffers().items() if v.is_floating_point()}
        grads = list(sae.grads.values())
        packed = torch.cat([g.reshape(-1) for g in grads] + [fired_here] + [b.reshape(-1) for b in floats.values()])
        dist.all_reduce(packed)
        packed.div_(world)
        offset = 0
        for tensor in [*grads, fired_here, *floats.values()]:
            tensor.copy_(packed[offset : offset + tensor.numel()].view_as(tensor))
            offset += tensor.numel()
        # fired anywhere in the whole batch: reset; else the whole batch's samples count, as in one process
        counters.copy_(torch.where(fired_here > 0, torch.zeros_like(before), before + x.shape[0]))
        if stats is None:
            return None
        values = torch.tensor([stats.loss, stats.recon, stats.sparsity, stats.l0, stats.fvu], dtype=torch.float64)
        dist.all_reduce(values)
        return StepStats(*(values / world).tolist())


def train_sweep_distributed(
    configs: list[SAEConfig],
    source: BatchSource,
    train: TrainConfig,
    out_dir: Path,
    replica: Replica,
    source_spec: dict | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    observer: SweepObserver | None = None,
) -> list[SweepRun]:
    """``train_sweep`` with every process of the group training on its slice of each batch; see the module doc.

    An ``observer`` watches on the writing process only (every process holds the same weights)."""
    out_dir = Path(out_dir)
    _check_batch(train.batch_size, replica)
    agree(replica, sweep_conflict(configs, train, out_dir, source_spec) if replica.is_writer else None)
    runs = train_sweep(
        configs,
        source,
        train,
        out_dir,
        source_spec=source_spec,
        progress=progress,
        stop_after=stop_after,
        observer=observer if replica.is_writer else None,
        make_run=lambda config: DataParallelRun(config, replica),
        writer=replica.is_writer,
    )
    dist.barrier()  # the weights are on disk before any process goes on to read them
    return runs


def train_lm_distributed(
    config: TinyLMConfig,
    train_tokens: np.ndarray,
    val_tokens: np.ndarray,
    out_dir: Path,
    replica: Replica,
    train: TrainLMConfig | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainedLM:
    """``train_lm`` with DistributedDataParallel: each process takes its slice of every batch; rank 0 writes.

    The folder is the one ``train_lm`` writes (a finished model with the same settings is loaded, a
    checkpoint is resumed), so either function resumes or reuses the other's work.
    """
    train = train or TrainLMConfig()
    out_dir = Path(out_dir)
    _check_batch(train.batch_size, replica)
    metrics_path = out_dir / "lm_metrics.json"
    data = lm_data_record(train_tokens, val_tokens)
    same = same_lm_settings(out_dir, config, train, data)
    finished = same and metrics_path.exists() and (out_dir / "model.safetensors").exists()
    dist.barrier()  # every process has read the folder before rank 0 changes it
    if finished:
        return TrainedLM(load_lm(out_dir), LMMetrics(**json.loads(metrics_path.read_text())))
    if replica.is_writer:
        _prepare_lm_folder(out_dir, config, train, data, same)
    dist.barrier()

    model = initial_lm(config, train)
    optimizer = lm_optimizer(model, train)
    checkpoint, log_path = out_dir / "checkpoint", out_dir / "train_log.jsonl"
    start, seconds = 0, 0.0
    if (checkpoint / "state.json").exists():
        start, seconds = read_lm_checkpoint(checkpoint, model, optimizer)
        if replica.is_writer:
            truncate_log(log_path, start)
    elif replica.is_writer:
        log_path.unlink(missing_ok=True)
    model.to(replica.device)
    _optimizer_to(optimizer, replica.device)
    cuda = replica.device.type == "cuda"
    ddp = DistributedDataParallel(model, device_ids=[replica.device.index] if cuda else None)
    val_probe = eval_windows(val_tokens, config.context, train.eval_sequences).to(replica.device)
    seq_tokens = train.batch_size * config.context
    end = train.steps if stop_after is None else min(stop_after, train.steps)
    bar = tqdm(range(start, end), initial=start, total=train.steps, disable=not (progress and replica.is_writer))
    with log_path.open("a") if replica.is_writer else open(os.devnull, "w") as log:
        for step in bar:
            began = time.perf_counter()
            ddp.train()
            batch = sample_batch(train_tokens, step, train.batch_size, config.context + 1, train.seed)
            lr = lr_at(step, train)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = next_token_loss(ddp, replica.slice(batch).to(replica.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # DistributedDataParallel averages the gradients over the processes here
            torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
            optimizer.step()
            elapsed = time.perf_counter() - began
            seconds += elapsed
            done = step + 1
            if done % train.log_every == 0 or done == train.steps:
                mean = loss.detach().clone()
                dist.all_reduce(mean)
                line = {
                    "step": done,
                    "tokens": done * seq_tokens,
                    "loss": mean.item() / replica.world,
                    "lr": lr,
                    "tokens_per_s": seq_tokens / max(elapsed, 1e-9),
                }
                if replica.is_writer and (done % train.eval_every == 0 or done == train.steps):
                    line["val_loss"] = mean_loss(model, val_probe)
                log.write(json.dumps(line) + "\n")
                log.flush()
            if replica.is_writer and (done % train.checkpoint_every == 0 or done == end):
                write_lm_checkpoint(checkpoint, done, model, optimizer, seconds)  # safetensors copies to the CPU
    bar.close()
    model = model.cpu().eval()
    metrics = None
    if end == train.steps and replica.is_writer:
        save_lm(model, out_dir)
        metrics = evaluate_lm(model, train_tokens, val_tokens, train.steps, train.steps * seq_tokens, seconds)
        metrics_path.write_text(json.dumps(asdict(metrics), indent=2))
    dist.barrier()
    if end == train.steps and metrics is None:
        metrics = LMMetrics(**json.loads(metrics_path.read_text()))
    return TrainedLM(model, metrics)


def _prepare_lm_folder(out_dir: Path, config: TinyLMConfig, train: TrainLMConfig, data: dict, same: bool) -> None:
    """What ``train_lm`` does before training: drop a run with other settings, record this one's."""
    if not same and out_dir.exists():
        shutil.rmtree(out_dir / "checkpoint", ignore_errors=True)
        (out_dir / "lm_metrics.json").unlink(missing_ok=True)
        (out_dir / "model.safetensors").unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(config.model_dump_json(indent=2))
    (out_dir / "train_config.json").write_text(train.model_dump_json(indent=2))
    (out_dir / "data.json").write_text(json.dumps(data, indent=2))


def _optimizer_to(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    for state in optimizer.state.values():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                state[name] = value.to(device)


def train_pipeline_lm(
    config: PipelineConfig,
    workdir: Path,
    corpus_path: Path | None = None,
    replica: Replica | None = None,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> TrainedLM:
    """The pipeline's tokenizer and LM steps into ``workdir`` (``monosemantic run`` then reuses both).

    With a replica the first process tokenizes while the others wait, and the LM trains data-parallel.
    """
    workdir = Path(workdir)
    problem = None
    if replica is None or replica.is_writer:
        try:
            corpus = corpus_subset(load_corpus(corpus_path), config.max_documents)
            tokenize_corpus(corpus, workdir / "tokens", TokenizeConfig(vocab_size=config.vocab_size), progress)
        except (ValueError, OSError, CorpusError) as exc:
            if replica is None:
                raise
            problem = str(exc)
    if replica is not None:
        agree(replica, problem)
    tokens = load_tokenized(workdir / "tokens")
    lm_config = TinyLMConfig(vocab_size=tokens.tokenizer.get_vocab_size())
    train = lm_train_config(config)
    split = tokens.train.tokens, tokens.val.tokens
    if replica is None:
        return train_lm(lm_config, *split, workdir / "lm", train, progress=progress, device=device)
    return train_lm_distributed(lm_config, *split, workdir / "lm", replica, train, progress=progress)
