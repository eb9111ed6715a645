"""Causal self-attention for tiny heads on the CPU, with the attention pattern kept for the backward pass.

At the study's widths a head is 4 wide, so attention is all softmax and no matmul: PyTorch's CPU flash
kernel recomputes the 128 x 128 pattern of every head in the backward pass and spends most of its time in
loop overhead. Here the pattern is computed once, in blocks of heads small enough to stay in cache, and the
backward pass reuses it; queries go in consecutive blocks that skip the keys after them, which the causal
mask would zero anyway (a quarter of the work or more). The result equals
``F.scaled_dot_product_attention(q, k, v, is_causal=True)`` up to float rounding. On CUDA, and without
gradients, the flash kernels are the better choice and are used.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

HEADS_PER_BLOCK = 64
QUERY_BLOCKS = 4


def _causal_mask(length: int, device: torch.device) -> torch.Tensor:
    return torch.full((length, length), float("-inf"), device=device).triu_(1)


def _query_bounds(length: int, blocks: int) -> list[tuple[int, int]]:
    """Consecutive query ranges; the queries of range (a, b) see only keys before b, so later keys are skipped."""
    edges = sorted({round(length * i / blocks) for i in range(blocks + 1)})
    return list(zip(edges[:-1], edges[1:], strict=False))


class _CausalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, heads_per_block, query_blocks):
        n, t, d = q.shape
        scale = d**-0.5
        mask = _causal_mask(t, q.device)
        bounds = _query_bounds(t, query_blocks)
        patterns = []
        out = torch.empty_like(q)
        for s in range(0, n, heads_per_block):
            heads = slice(s, s + heads_per_block)
            for a, b in bounds:
                scores = torch.baddbmm(mask[a:b, :b], q[heads, a:b], k[heads, :b].transpose(1, 2), alpha=scale)
                pattern = torch.softmax(scores, dim=-1)
                out[heads, a:b] = torch.bmm(pattern, v[heads, :b])
                patterns.append(pattern)
        ctx.save_for_backward(q, k, v, out, *patterns)
        ctx.scale, ctx.heads_per_block, ctx.bounds = scale, heads_per_block, bounds
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, *patterns = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        row_dot = (grad_out * out).sum(dim=-1, keepdim=True)
        pattern_of = iter(patterns)
        for s in range(0, q.shape[0], ctx.heads_per_block):
            heads = slice(s, s + ctx.heads_per_block)
            for a, b in ctx.bounds:
                p, g = next(pattern_of), grad_out[heads, a:b]
                grad_v[heads, :b] += torch.bmm(p.transpose(1, 2), g)
                grad_scores = torch.bmm(g, v[heads, :b].transpose(1, 2)).sub_(row_dot[heads, a:b]).mul_(p)
                grad_q[heads, a:b] = torch.bmm(grad_scores, k[heads, :b]).mul_(ctx.scale)
                grad_k[heads, :b] += torch.bmm(grad_scores.transpose(1, 2), q[heads, a:b]).mul_(ctx.scale)
        return grad_q, grad_k, grad_v, None, None


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of (batch, heads, seq, head_dim) tensors, each position seeing itself and earlier ones."""
    if q.is_cuda or not torch.is_grad_enabled():
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    b, h, t, d = q.shape
    flat = [x.reshape(b * h, t, d).contiguous() for x in (q, k, v)]
    return _CausalAttention.apply(*flat, HEADS_PER_BLOCK, QUERY_BLOCKS).view(b, h, t, d)
