"""Cross-entropy through the unembedding, fused and chunked so the logits never leave the cache.

At the study's widths the LM spends most of a step on its 4096-way unembedding: the logits matrix (rows x
vocab) is written, read by log-softmax, written again as its gradient and read by two matmuls, each pass
going to main memory. Here each block of rows is unembedded, normalised and turned into its gradient while
it is still in cache, and only the small gradients (rows x d_model and vocab x d_model) are kept for the
backward pass. The loss and gradients are the same as ``F.cross_entropy(hidden @ weight.T, targets)`` up to
float rounding.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

CHUNK_ROWS = 256


def _chunk_losses(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, grads: bool, chunk_rows: int):
    """Per-row losses and, when ``grads``, the gradients of their sum with respect to hidden and weight."""
    rows = hidden.shape[0]
    losses = torch.empty(rows, dtype=torch.float32, device=hidden.device)
    grad_hidden = torch.empty_like(hidden) if grads else None
    grad_weight = torch.zeros_like(weight) if grads else None
    for start in range(0, rows, chunk_rows):
        h = hidden[start : start + chunk_rows]
        y = targets[start : start + chunk_rows]
        logits = h @ weight.t()
        target_logit = logits.gather(1, y[:, None]).squeeze(1)
        peak = logits.amax(dim=1, keepdim=True)
        probs = logits.sub_(peak).exp_()
        total = probs.sum(dim=1, keepdim=True)
        losses[start : start + chunk_rows] = (peak + total.log()).squeeze(1) - target_logit
        if grads:
            probs.div_(total)
            probs[torch.arange(len(y), device=y.device), y] -= 1.0
            torch.mm(probs, weight, out=grad_hidden[start : start + chunk_rows])
            grad_weight.addmm_(probs.t(), h)
    return losses, grad_hidden, grad_weight


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_rows, reduction):
        grads = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        losses, grad_hidden, grad_weight = _chunk_losses(hidden, weight, targets, grads, chunk_rows)
        scale = 1.0 / max(hidden.shape[0], 1) if reduction == "mean" else 1.0
        ctx.save_for_backward(grad_hidden if grads else None, grad_weight if grads else None)
        ctx.scale = scale
        return losses.sum() * scale

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        factor = grad_output * ctx.scale
        return (
            grad_hidden * factor if ctx.needs_input_grad[0] else None,
            grad_weight * factor if ctx.needs_input_grad[1] else None,
            None,
            None,
            None,
        )


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    reduction: str = "mean",
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """``F.cross_entropy(hidden @ weight.T, targets, reduction=...)`` without materialising the logits.

    ``hidden`` is rows x d, ``weight`` vocab x d, ``targets`` rows of class ids. ``reduction`` is "mean",
    "sum" or "none" (per-row losses; fused only without gradients, else through the logits).
    """
    chunk_rows = chunk_rows or CHUNK_ROWS
    if reduction == "none":
        if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
            return F.cross_entropy(hidden @ weight.t(), targets, reduction="none")
        return _chunk_losses(hidden, weight, targets, False, chunk_rows)[0]
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")
    hidden = hidden.float().contiguous()
    return _LinearCrossEntropy.apply(hidden, weight, targets, chunk_rows, reduction)
