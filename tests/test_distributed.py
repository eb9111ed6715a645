"""Data-parallel training on 2 gloo CPU processes matches one process, and checkpoints cross over both ways.

One spawn of two processes runs every distributed case; the single-process references run here.
Sums are taken in another order across processes, so weights agree within TOLERANCE, not bit for bit.
"""

from __future__ import annotations

import json
import os
import random
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from app.cli.commands import main
from tests.builders import sae_config
from tests.text_builders import tiny_lm_config, tiny_tokens
from training.data.toy import ToyConfig, ToyData
from training.experiments.distributed import (
    Replica,
    init_replica,
    train_lm_distributed,
    train_pipeline_lm,
    train_sweep_distributed,
)
from training.experiments.pipeline import PRESETS
from training.lm.tinylm import TrainLMConfig, load_lm, train_lm
from training.saes import load_sae
from training.sweeps.trainer import TrainConfig, train_sweep

WORLD = 2
TOLERANCE = 1e-4  # max abs difference of any weight after the whole run
SWEEP = TrainConfig(samples=32 * 256, batch_size=256, checkpoint_every=8, log_every=8, init_samples=1024)
STOP = 12  # steps a run is stopped after, before another kind of run resumes it
LM_TRAIN = TrainLMConfig(
    steps=12, batch_size=8, warmup=2, log_every=4, eval_every=6, eval_sequences=4, checkpoint_every=6
)
LM_STOP = 6


def sweep_configs():
    """relu with resampling (latents die and are resampled: the firing counters must agree), topk, jumprelu.

    topk's latents never count as dead here: its aux-k loss is normalised per process (see
    training.experiments.distributed), so with dead latents it agrees with one process only approximately.
    """
    return [
        sae_config("relu", dict_size=64, l1=1.0, dead_after=1024, resample=True),
        sae_config("topk", dict_size=64, k=2),
        sae_config("jumprelu", dict_size=32, l1=0.05),
    ]


def toy() -> ToyData:
    return ToyData(ToyConfig(dim=16, n_features=32, seed=3))


def lm_tokens():
    tokens = tiny_tokens()
    return tokens[:3600], tokens[3600:]


def _worker(rank: int, port: int, root: Path) -> None:
    """Every distributed case, in order, as process ``rank`` of WORLD: each resumes a run stopped by the other kind."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        replica = init_replica()
        stopped, resumed = root / "sweep_dist_then_single", root / "sweep_single_then_dist"
        train_sweep_distributed(sweep_configs(), toy(), SWEEP, stopped, replica, progress=False, stop_after=STOP)
        runs = train_sweep_distributed(sweep_configs(), toy(), SWEEP, resumed, replica, progress=False)
        weights = {f"{i}.{k}": v for i, run in enumerate(runs) for k, v in run.sae.params().items()}
        save_file(weights, str(root / f"rank{rank}.safetensors"))
        train_tokens, val_tokens = lm_tokens()
        config, stopped, resumed = (
            tiny_lm_config(n_layers=2),
            root / "lm_dist_then_single",
            root / "lm_single_then_dist",
        )
        train_lm_distributed(config, train_tokens, val_tokens, stopped, replica, LM_TRAIN, False, stop_after=LM_STOP)
        train_lm_distributed(config, train_tokens, val_tokens, resumed, replica, LM_TRAIN, progress=False)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Single-process references and stopped runs, then the distributed cases, then single-process resumes."""
    root = tmp_path_factory.mktemp("distributed")
    train_sweep(sweep_configs(), toy(), SWEEP, root / "sweep_single", progress=False)
    train_sweep(sweep_configs(), toy(), SWEEP, root / "sweep_single_then_dist", progress=False, stop_after=STOP)
    train_tokens, val_tokens = lm_tokens()
    config = tiny_lm_config(n_layers=2)
    train_lm(config, train_tokens, val_tokens, root / "lm_single", LM_TRAIN, progress=False)
    train_lm(
        config, train_tokens, val_tokens, root / "lm_single_then_dist", LM_TRAIN, progress=False, stop_after=LM_STOP
    )
    env = {"OMP_NUM_THREADS": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        mp.spawn(_worker, args=(_free_port(), root), nprocs=WORLD, join=True)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    train_sweep(sweep_configs(), toy(), SWEEP, root / "sweep_dist_then_single", progress=False)
    train_lm(config, train_tokens, val_tokens, root / "lm_dist_then_single", LM_TRAIN, progress=False)
    return root


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _log_keys(folder: Path) -> list[tuple[int, int]]:
    lines = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    return [(line["index"], line["step"]) for line in lines]


def _sae_weights(folder: Path) -> dict[str, torch.Tensor]:
    return {f"{c.name}.{k}": v for c in sweep_configs() for k, v in load_sae(folder / "saes" / c.name).params().items()}


@pytest.mark.parametrize("case", ["sweep_dist_then_single", "sweep_single_then_dist"])
def test_sweep_matches_one_process(runs: Path, case: str) -> None:
    reference = _sae_weights(runs / "sweep_single")
    weights = _sae_weights(runs / case)
    assert _max_diff(reference, weights) < TOLERANCE
    assert _max_diff(reference, {k: torch.zeros_like(v) for k, v in reference.items()}) > 0.1  # trained weights
    log = _log_keys(runs / case)
    assert len(log) == len(set(log)) and sorted(log) == sorted(_log_keys(runs / "sweep_single"))


def test_every_process_holds_the_same_weights(runs: Path) -> None:
    rank0, rank1 = load_file(str(runs / "rank0.safetensors")), load_file(str(runs / "rank1.safetensors"))
    assert _max_diff(rank0, rank1) == 0.0


@pytest.mark.parametrize("case", ["lm_dist_then_single", "lm_single_then_dist"])
def test_lm_matches_one_process(runs: Path, case: str) -> None:
    reference = load_lm(runs / "lm_single").state_dict()
    assert _max_diff(reference, load_lm(runs / case).state_dict()) < TOLERANCE
    assert (runs / case / "lm_metrics.json").exists()


def test_replica_slices_a_batch_into_equal_parts() -> None:
    batch = torch.arange(12).view(6, 2)
    parts = [Replica(r, 3, torch.device("cpu")).slice(batch) for r in range(3)]
    assert torch.equal(torch.cat(parts), batch) and all(len(p) == 2 for p in parts)


def test_train_lm_command_builds_the_lm_folder_that_run_reuses(tmp_path: Path, capsys) -> None:
    rng = random.Random(0)
    words = "the cat dog sat ran on a mat in the old house and then slept near river while birds sang".split()
    sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 12))).capitalize() + "." for _ in range(600)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(sentences[i : i + 20]) for i in range(0, 600, 20)))  # 30 paragraphs
    workdir = tmp_path / "run"
    args = ["train-lm", "--preset", "quick", "--workdir", str(workdir), "--corpus", str(corpus), "--steps", "3"]
    assert main([*args, "--no-progress"]) == 0
    assert "LM validation loss" in capsys.readouterr().out
    metrics = json.loads((workdir / "lm" / "lm_metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["val_loss"] > 0
    stamp = (workdir / "lm" / "model.safetensors").stat().st_mtime_ns
    config = PRESETS["quick"].model_copy(update={"lm_steps": 3})
    again = train_pipeline_lm(config, workdir, corpus, progress=False)  # what `run` does with the same settings
    assert (workdir / "lm" / "model.safetensors").stat().st_mtime_ns == stamp
    assert again.metrics is not None and again.metrics.val_loss == metrics["val_loss"]
