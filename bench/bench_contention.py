"""Training speed when the machine is not idle: each step alone and beside a competing PyTorch job.

Two steps are timed: the study's SAE sweep step (its 18 relu and topk SAEs of 128-4096 latents on one batch
of 512 rows of d=64) and the LM step (what ``train_lm`` does per step at the study's widths, 32 x 128
tokens). Each is timed in alternating rounds: alone, then beside a competitor started for that round and
stopped after it; the ratio of a busy round's speed to the idle round just before it is what to read (the
median over rounds). Competitors run at normal priority and end by themselves within a minute:
- ``matmul``: a PyTorch loop of 1024 x 1024 matrix products on 2 threads, as when a second experiment runs;
- ``matmul1``: the same loop on one thread, as when one single-threaded job runs beside;
- ``copy``: a second copy of the same step with the same settings, as when two of our trainings share cores.

Each setting runs in a fresh process, since OpenMP reads its environment once at start:
- ``pytorch``: PyTorch's defaults (threads = cores, OpenMP's spin-then-sleep wait), our thread control off;
- ``ours``: what the trainers do (``training.runtime.threads.CoreShare`` after every step);
- ``passive`` and ``one`` (alternatives, not defaults): ``OMP_WAIT_POLICY=PASSIVE``, or a single thread.

    .venv/bin/python bench/bench_contention.py [--rounds R] [--seconds S] [--steps lm,sae] [--settings ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SETTLE_S = 3.0  # untimed stepping before each timed stretch: three intervals of the thread control
CONTROL_INTERVAL_S = 1.0
SETTINGS = {
    "pytorch": {"MONOSEMANTIC_ADAPTIVE_THREADS": "0"},
    "ours": {"MONOSEMANTIC_ADAPTIVE_THREADS": "1"},
    # Alternatives measured on the way (docs/bench.md): threads that sleep at once at a barrier, one thread.
    "passive": {"MONOSEMANTIC_ADAPTIVE_THREADS": "0", "OMP_WAIT_POLICY": "PASSIVE"},
    "one": {"MONOSEMANTIC_ADAPTIVE_THREADS": "0", "OMP_NUM_THREADS": "1"},
    "spin1k": {"MONOSEMANTIC_ADAPTIVE_THREADS": "0", "GOMP_SPINCOUNT": "1000"},
    "spin10k": {"MONOSEMANTIC_ADAPTIVE_THREADS": "0", "GOMP_SPINCOUNT": "10000"},
    "spin50k": {"MONOSEMANTIC_ADAPTIVE_THREADS": "0", "GOMP_SPINCOUNT": "50000"},
}
MATMUL = (
    "import time, torch\n"
    "torch.set_num_threads({threads})\n"
    "a = torch.randn(1024, 1024)\n"
    "end = time.time() + {seconds}\n"
    "while time.time() < end:\n"
    "    a @ a\n"
)


def sae_step(share):
    """One step of the study's SAE sweep, as ``train_sweep`` runs it (the thread control asked after each SAE)."""
    from training.experiments.pipeline import PRESETS, sae_configs
    from training.sweeps.trainer import SweepRun

    torch.manual_seed(0)
    x = torch.randn(512, 64)
    runs = [SweepRun(config) for config in sae_configs(PRESETS["study"], 64)]
    for run in runs:
        run.sae.initialise_from_data(torch.randn(4096, 64))
    position = iter(range(10**9))

    def step() -> None:
        at = next(position) % 1000
        for run in runs:
            run.step(x, at, 1000, 1e-3, False)
            share.after_step()

    return step


def lm_step(share):
    """One step of ``train_lm`` at the study's widths: loss, backward, clipping, AdamW, then the thread control."""
    from training.lm.tinylm import TinyLM, TinyLMConfig, TrainLMConfig, lm_optimizer, next_token_loss

    torch.manual_seed(0)
    config = TinyLMConfig(vocab_size=4096)
    model = TinyLM(config)
    optimizer = lm_optimizer(model, TrainLMConfig())
    batch = torch.randint(0, 4096, (32, config.context + 1))

    def step() -> None:
        loss = next_token_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        share.after_step()

    return step


STEPS = {"sae": sae_step, "lm": lm_step}


def _speed(step, seconds: float) -> float:
    """Steps per second over ``seconds`` of wall time."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        done += 1
    return done / (time.perf_counter() - start)


def _competitor(kind: str, step_name: str, setting: str, seconds: float) -> subprocess.Popen:
    if kind in ("matmul", "matmul1"):
        command = [sys.executable, "-c", MATMUL.format(threads=1 if kind == "matmul1" else 2, seconds=seconds + 30)]
    else:
        command = [sys.executable, __file__, "--spin", step_name, "--seconds", str(seconds + 30)]
    env = {**os.environ, **SETTINGS[setting]} if kind == "copy" else dict(os.environ)
    return subprocess.Popen(command, env=env, cwd=REPO)


def measure(step_name: str, setting: str, competitors: list[str], rounds: int, seconds: float) -> dict:
    """In this process: idle speed and the median ratio beside each competitor, over alternating rounds."""
    from training.runtime.threads import CoreShare

    # A training runs for minutes, so what counts is the steady state: each timed stretch follows an untimed
    # one long enough for the thread control to measure the new situation (a whole interval after the change).
    share = CoreShare(interval_s=CONTROL_INTERVAL_S)
    step = STEPS[step_name](share)
    idle, ratios = [], {kind: [] for kind in competitors}
    for _ in range(rounds):
        for kind in competitors:
            _speed(step, SETTLE_S)
            alone = _speed(step, seconds)
            idle.append(alone)
            rival = _competitor(kind, step_name, setting, SETTLE_S + seconds)
            try:
                time.sleep(1.0)  # the rival's start-up (imports, first products) is not the steady state
                _speed(step, SETTLE_S)
                ratios[kind].append(_speed(step, seconds) / alone)
            finally:
                rival.kill()
                rival.wait()
            time.sleep(0.5)
    return {
        "step": step_name,
        "setting": setting,
        "idle_steps_per_s": statistics.median(idle),
        "ratios": {kind: statistics.median(values) for kind, values in ratios.items()},
        "threads_changes": len(share.changes),
    }


def spin(step_name: str, seconds: float) -> None:
    """A competitor: run the step until ``seconds`` have passed, with the same thread control."""
    from training.runtime.threads import CoreShare

    step = STEPS[step_name](CoreShare(interval_s=CONTROL_INTERVAL_S))
    end = time.time() + seconds
    while time.time() < end:
        step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per competitor (default 5)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per timed round (default 4)")
    parser.add_argument("--steps", default="sae,lm", help="which steps to time (default sae,lm)")
    parser.add_argument("--settings", default="pytorch,ours", help="settings to compare (default pytorch,ours)")
    parser.add_argument("--competitors", default="matmul,copy", help="competitors (default matmul,copy)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    parser.add_argument("--child", nargs=2, metavar=("STEP", "SETTING"), help=argparse.SUPPRESS)
    parser.add_argument("--spin", metavar="STEP", help=argparse.SUPPRESS)
    args = parser.parse_args()
    competitors = args.competitors.split(",")
    if args.spin:
        return spin(args.spin, args.seconds)
    if args.child:
        print(json.dumps(measure(*args.child, competitors, args.rounds, args.seconds)))
        return
    print(f"Training beside a competing job, {os.cpu_count()} cores; ratio = busy speed / idle speed (median)")
    print(f"{'step':<6}{'setting':<10}{'idle steps/s':>14}" + "".join(f"{'vs ' + k:>14}" for k in competitors))
    results = []
    for step_name in args.steps.split(","):
        for setting in args.settings.split(","):
            command = [sys.executable, __file__, "--child", step_name, setting, "--rounds", str(args.rounds)]
            command += ["--seconds", str(args.seconds), "--competitors", args.competitors]
            env = {**os.environ, **SETTINGS[setting]}
            result = json.loads(subprocess.run(command, env=env, cwd=REPO, check=True, capture_output=True).stdout)
            results.append(result)
            cells = "".join(f"{result['ratios'][k]:>14.2f}" for k in competitors)
            print(f"{step_name:<6}{setting:<10}{result['idle_steps_per_s']:>14.1f}{cells}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
