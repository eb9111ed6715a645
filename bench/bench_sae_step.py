"""Training-step time of a finished run's SAEs, against the same steps at another commit, in the same run.

Each SAE is loaded from the run's last sweep checkpoint (its trained weights, optimiser state and dead
latents, so the step does the work a late step of that sweep does) and stepped on the run's own
activations, scaled as the pipeline scales them. The code of ``--against`` (a commit, checked out into a
temporary git worktree) and the working tree's code are timed in alternating rounds in fresh processes;
each side keeps its best round, and the ratio is against's time over ours.

    .venv/bin/python bench/bench_sae_step.py --run runs/study_v5 --against c0bfb2f [--names topk_n4096_k8 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCH = 512


def time_steps(run_dir: Path, names: list[str], steps: int, threads: int) -> dict[str, float]:
    """Milliseconds per training step of each named SAE (best of three timings), with the code on sys.path."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    from training.saes.base import SAEConfig
    from training.sweeps.trainer import SweepRun

    torch.set_num_threads(threads)
    configs = [SAEConfig(**sae) for sae in json.loads((run_dir / "saes" / "sweep.json").read_text())["saes"]]
    meta = json.loads((run_dir / "activations" / "activations_train.json").read_text())
    rows = np.memmap(run_dir / "activations" / meta["file"], dtype=np.float32, mode="r").reshape(meta["shape"])
    x = torch.from_numpy(np.array(rows[: BATCH * 50])).div_(meta["mean_sq_norm"] ** 0.5)
    batches = x.split(BATCH)
    out = {}
    for name in names:
        index = [c.name for c in configs].index(name)
        run = SweepRun(configs[index])
        run.load_state(load_file(str(run_dir / "saes" / "checkpoint" / f"sae_{index}.safetensors")))
        _steps(run, batches, 10)
        out[name] = min(_steps(run, batches, steps) for _ in range(3)) * 1e3
    return out


def _steps(run, batches: tuple, n: int) -> float:
    """Seconds per step over n training steps of ``run`` (a SweepRun) on the cycled batches."""
    start = time.perf_counter()
    for step in range(n):
        run.step(batches[step % len(batches)], 10**6, 2 * 10**6, 1e-5, False)
    return (time.perf_counter() - start) / n


def _worker(code: Path, args: argparse.Namespace, names: list[str]) -> dict[str, float]:
    command = [sys.executable, __file__, "--worker", "--run", str(args.run), "--steps", str(args.steps)]
    command += ["--threads", str(args.threads), "--names", *names]
    env = {**os.environ, "PYTHONPATH": str(code)}
    result = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished run directory (saes/checkpoint)")
    parser.add_argument("--against", help="the commit to compare with (required unless --worker)")
    parser.add_argument("--names", nargs="*", help="SAE names (default: every SAE of the sweep)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.run = args.run.resolve()
    sweep = args.run / "saes" / "sweep.json"
    if not sweep.exists():
        sys.exit(f"{args.run} has no finished sweep ({sweep} is missing)")
    from training.saes.base import SAEConfig

    names = args.names or [SAEConfig(**sae).name for sae in json.loads(sweep.read_text())["saes"]]
    if args.worker:
        print(json.dumps(time_steps(args.run, names, args.steps, args.threads)))
        return
    if not args.against:
        sys.exit("--against COMMIT is required")
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "against"
        add = ["git", "worktree", "add", "--detach", str(tree), args.against]
        subprocess.run(add, cwd=ROOT, check=True, capture_output=True)
        try:
            theirs: dict[str, float] = {}
            ours: dict[str, float] = {}
            for _ in range(args.rounds):
                for side, code in ((theirs, tree), (ours, ROOT)):
                    for name, ms in _worker(code, args, names).items():
                        side[name] = min(side.get(name, float("inf")), ms)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    print(f"ms per step of {BATCH} rows, {args.threads} threads, best of {args.rounds} alternating rounds")
    print(f"{'sae':22s} {args.against[:10]:>10s} {'this tree':>10s} {'ratio':>6s}")
    for name in names:
        print(f"{name:22s} {theirs[name]:10.2f} {ours[name]:10.2f} {theirs[name] / ours[name]:6.2f}")


if __name__ == "__main__":
    main()
