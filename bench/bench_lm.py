"""LM training throughput against a plain PyTorch loop of the same shape, timed interleaved in one run.

The reference is the textbook loop: nn.Embedding, pre-LayerNorm blocks with nn.MultiheadAttention (causal
mask) and a GELU MLP, a tied-free unembedding, cross-entropy, AdamW and gradient clipping, on batches of
32 x 128 tokens of a 4096-token vocabulary at the study's widths (residual 16, 6 layers, MLP 64, 4 heads).
The project's step is exactly what ``train_lm`` does per step. Both train from the same random windows;
rounds alternate between them so a busy machine slows both alike, and the ratio is what to read: the median
over rounds of each round's ratio to the reference round just before it. Tokens/s is the best round.

    .venv/bin/python bench/bench_lm.py [--steps N] [--rounds R] [--threads T]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.nn import functional as F

from training.lm.tinylm import TinyLM, TinyLMConfig, TrainLMConfig, lm_optimizer, next_token_loss

VOCAB, CONTEXT, BATCH = 4096, 128, 32


class PlainBlock(nn.Module):
    def __init__(self, d: int, heads: int, d_mlp: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, d_mlp), nn.GELU(), nn.Linear(d_mlp, d))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class PlainLM(nn.Module):
    """The same shape as TinyLM, written the way a textbook writes it."""

    def __init__(self, config: TinyLMConfig) -> None:
        super().__init__()
        d = config.d_model
        self.embed, self.pos = nn.Embedding(config.vocab_size, d), nn.Embedding(config.context, d)
        self.blocks = nn.ModuleList(PlainBlock(d, config.n_heads, config.d_mlp) for _ in range(config.n_layers))
        self.ln_f, self.unembed = nn.LayerNorm(d), nn.Linear(d, config.vocab_size, bias=False)
        mask = torch.triu(torch.full((config.context, config.context), float("-inf")), diagonal=1)
        self.register_buffer("mask", mask)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        x = self.embed(tokens) + self.pos(torch.arange(t, device=tokens.device))
        for block in self.blocks:
            x = block(x, self.mask[:t, :t])
        return self.unembed(self.ln_f(x))


def plain_step(model: PlainLM, optimizer: torch.optim.Optimizer, batch: torch.Tensor) -> float:
    logits = model(batch[:, :-1])
    loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


def project_step(model: TinyLM, optimizer: torch.optim.Optimizer, batch: torch.Tensor) -> float:
    loss = next_token_loss(model, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round (default 10)")
    parser.add_argument("--rounds", type=int, default=9, help="alternating rounds of each (default 9)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where both loops run (default cpu)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = TinyLMConfig(vocab_size=VOCAB)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, VOCAB, (BATCH, CONTEXT + 1), generator=generator).to(device) for _ in range(args.steps)]
    project = TinyLM(config).to(device)
    project_opt = lm_optimizer(project, TrainLMConfig())
    plain = PlainLM(config).to(device)
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    runners = {
        "plain PyTorch loop": (plain_step, plain, plain_opt),
        "monosemantic train_lm step": (project_step, project, project_opt),
    }
    seconds = {name: [] for name in runners}
    for step, model, optimizer in runners.values():
        step(model, optimizer, batches[0])  # warm-up
    for _ in range(args.rounds):
        for name, (step, model, optimizer) in runners.items():
            start = time.perf_counter()
            for batch in batches:
                step(model, optimizer, batch)  # its loss.item() waits for the GPU
            seconds[name].append(time.perf_counter() - start)
    tokens = args.steps * BATCH * CONTEXT
    rates = {name: tokens / min(times) for name, times in seconds.items()}
    reference = "plain PyTorch loop"
    header = f"on {device}:"
    print(f"{header:<28} {'tokens/s':>10} {'vs plain':>9}   ({args.rounds} alternating rounds of {args.steps} steps)")
    for name, rate in rates.items():
        # Each round is compared with the reference's round just before it, so a machine that slows down
        # or speeds up between rounds moves both sides of a ratio alike; the median of those ratios is shown.
        paired = sorted(ref / own for ref, own in zip(seconds[reference], seconds[name], strict=True))
        median = paired[len(paired) // 2]
        spread = f"paired ratios {paired[0]:.2f}-{paired[-1]:.2f}"
        print(f"{name:<28} {rate:>10,.0f} {median:>8.2f}x   {spread}")


if __name__ == "__main__":
    main()
