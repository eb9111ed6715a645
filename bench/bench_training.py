"""Training throughput of every SAE architecture, as ratios against references measured in the same run.

References: (a) the dense-matmul ceiling of one training step, i.e. the five matrix products a dense
SAE step needs (encoder forward, decoder forward, decoder-input gradient, and the two weight
gradients) timed alone; (b) a minimal plain PyTorch ReLU SAE loop (nn.Parameter, autograd,
torch.optim.Adam, decoder renormalisation). Then a sweep of 8 SAEs trained in one pass against the
same 8 trained one after another, on toy data generated on the fly.

    .venv/bin/python bench/bench_training.py [--steps N] [--threads T]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from training.data.toy import ToyConfig, ToyData
from training.saes import ARCHS, SAEConfig
from training.sweeps.trainer import SweepRun, TrainConfig, train_sweep

D_IN, DICT_SIZE, BATCH = 64, 1024, 4096
DEVICE = torch.device("cpu")


def _sync() -> None:
    """Wait for queued GPU work, so a timer reads when the work is done (nothing to wait for on the CPU)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def _best_time(fn, steps: int, repeats: int = 3) -> float:
    """Seconds per call: the best of ``repeats`` timings of ``steps`` calls, after warm-up."""
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        _sync()
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def paired_ratio(reference, fn, steps: int, rounds: int = 5) -> tuple[float, float]:
    """(median over alternating rounds of reference's seconds / fn's seconds, fn's best seconds per call).

    Each fn round is compared with the reference round just before it, so a machine that changes speed
    between rounds moves both sides of a ratio alike."""
    for _ in range(3):
        reference()
        fn()
    ratios, best = [], float("inf")
    for _ in range(rounds):
        _sync()
        start = time.perf_counter()
        for _ in range(steps):
            reference()
        _sync()
        middle = time.perf_counter()
        for _ in range(steps):
            fn()
        _sync()
        own = time.perf_counter() - middle
        ratios.append((middle - start) / own)
        best = min(best, own / steps)
    return sorted(ratios)[len(ratios) // 2], best


def dense_products(x: torch.Tensor):
    """The five dense products of one SAE training step, as a function to time."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(DICT_SIZE, D_IN, generator=gen).to(DEVICE)
    c = torch.randn(BATCH, DICT_SIZE, generator=gen).relu_().to(DEVICE)
    g = torch.randn(BATCH, D_IN, generator=gen).to(DEVICE)

    def products() -> None:
        torch.mm(x, w.T)
        torch.mm(c, w)
        torch.mm(g, w.T)
        torch.mm(c.T, g)
        torch.mm(c.T, x)

    return products


def dense_ceiling(x: torch.Tensor, steps: int) -> float:
    """Seconds for the five dense products of one SAE training step."""
    return _best_time(dense_products(x), steps)


class PlainReluSAE(torch.nn.Module):
    """The textbook SAE loop most people write first: autograd does everything."""

    def __init__(self) -> None:
        super().__init__()
        dec = torch.randn(DICT_SIZE, D_IN)
        dec /= dec.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(dec)
        self.W_enc = torch.nn.Parameter(dec.clone() * 0.1)
        self.b_enc = torch.nn.Parameter(torch.zeros(DICT_SIZE))
        self.b_dec = torch.nn.Parameter(torch.zeros(D_IN))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = torch.relu((x - self.b_dec) @ self.W_enc.T + self.b_enc)
        x_hat = c @ self.W_dec + self.b_dec
        return ((x - x_hat) ** 2).sum(dim=1).mean() + 0.03 * c.sum(dim=1).mean()


def plain_loop(x: torch.Tensor, steps: int) -> float:
    """Seconds per step of the plain PyTorch ReLU SAE loop."""
    model = PlainReluSAE().to(DEVICE)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(x).backward()
        opt.step()
        with torch.no_grad():
            model.W_dec /= model.W_dec.norm(dim=1, keepdim=True)

    return _best_time(step, steps)


def arch_config(arch: str, dict_size: int = DICT_SIZE, sparsity: float | None = None) -> SAEConfig:
    if arch in ("topk", "batchtopk"):
        return SAEConfig(arch=arch, d_in=D_IN, dict_size=dict_size, k=int(sparsity or 5))
    return SAEConfig(arch=arch, d_in=D_IN, dict_size=dict_size, l1=sparsity or 0.03)


def arch_stepper(arch: str, x: torch.Tensor, steps: int):
    """One training step of one of our SAEs (gradients, Adam, decoder upkeep) per call, as a function to time.

    Schedules change the cost of a step (the top-k family anneals k from 4k down to k), so successive
    calls walk evenly over one whole training schedule of ``10 * steps`` steps rather than its start.
    """
    run = SweepRun(arch_config(arch))
    run.sae.initialise_from_data(x.cpu())
    run.to(DEVICE)
    total = 10 * steps
    positions = iter(range(0, 10**9, 10))

    def step() -> None:
        run.step(x, next(positions) % total, total, 1e-3, False)

    return step


def sweep_versus_separate(steps: int) -> tuple[float, float]:
    """Wall seconds of 8 SAEs trained in one pass, and of the same 8 trained one at a time."""
    toy = ToyData(ToyConfig(dim=D_IN, n_features=512))
    configs = [arch_config("relu", 512 * 2**i, l1) for i in range(2) for l1 in (0.01, 0.03)]
    configs += [arch_config("topk", 512 * 2**i, k) for i in range(2) for k in (4, 8)]
    train = TrainConfig(samples=steps * BATCH, batch_size=BATCH, checkpoint_every=10**9)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train_sweep(configs, toy, train, Path(tmp) / "sweep", progress=False, device=DEVICE)
        together = time.perf_counter() - start
        start = time.perf_counter()
        for i, config in enumerate(configs):
            train_sweep([config], toy, train, Path(tmp) / f"single{i}", progress=False, device=DEVICE)
        separate = time.perf_counter() - start
    return together, separate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where every side is timed (default cpu)")
    parser.add_argument("--no-sweep", action="store_true", help="skip the one-pass sweep comparison")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    if DEVICE.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    x = torch.randn(BATCH, D_IN, generator=torch.Generator().manual_seed(1)).to(DEVICE)

    ceiling = dense_ceiling(x, args.steps)
    plain = plain_loop(x, args.steps)
    products = dense_products(x)
    print(f"SAE training step, d={D_IN}, {DICT_SIZE} latents, batch {BATCH}, on {DEVICE} ({args.threads} CPU threads)")
    print("vs ceiling: the median of ratios to the ceiling timed in alternating rounds; samples/s: the best round")
    print(f"{'':<22}{'samples/s':>12}{'vs ceiling':>12}{'vs plain':>10}")
    print(f"{'dense-matmul ceiling':<22}{BATCH / ceiling:>12,.0f}{1.0:>12.2f}{plain / ceiling:>10.2f}")
    print(f"{'plain PyTorch relu':<22}{BATCH / plain:>12,.0f}{ceiling / plain:>12.2f}{1.0:>10.2f}")
    for arch in ARCHS:
        vs_ceiling, t = paired_ratio(products, arch_stepper(arch, x, args.steps), args.steps)
        print(f"{arch:<22}{BATCH / t:>12,.0f}{vs_ceiling:>12.2f}{plain / t:>10.2f}")

    if args.no_sweep:
        return
    together, separate = sweep_versus_separate(max(args.steps, 10))
    print(f"\n8-SAE sweep on toy data (d={D_IN}, G=512), {max(args.steps, 10)} steps of {BATCH}:")
    print(f"  one pass {together:.1f}s, eight separate runs {separate:.1f}s, ratio {separate / together:.2f}x")


if __name__ == "__main__":
    main()
