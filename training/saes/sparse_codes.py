"""Sparse latent codes (row, latent, value triplets) and their decoder products.

The top-k family activates a few latents per sample, and so does a trained ReLU dictionary, so
decoding and every gradient touch only those atoms: the decoder is an embedding-bag over the chosen
rows and the weight gradients are index-adds. Only the encoder's dense product remains.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class SparseCodes:
    """Active latents of a batch, grouped by sample: ``offsets[b]`` starts sample b's entries."""

    rows: torch.Tensor
    cols: torch.Tensor
    vals: torch.Tensor
    offsets: torch.Tensor

    @classmethod
    def from_topk(cls, vals: torch.Tensor, idx: torch.Tensor) -> SparseCodes:
        b, k = vals.shape
        rows = torch.arange(b, device=vals.device).repeat_interleave(k)
        return cls(rows, idx.reshape(-1), vals.reshape(-1), torch.arange(0, b * k, k, device=vals.device))

    @classmethod
    def from_flat(cls, flat_idx: torch.Tensor, vals: torch.Tensor, batch: int, width: int) -> SparseCodes:
        order = flat_idx.argsort()
        flat_idx, vals = flat_idx[order], vals[order]
        rows = torch.div(flat_idx, width, rounding_mode="floor")
        offsets = torch.searchsorted(rows, torch.arange(batch, device=rows.device))
        return cls(rows, flat_idx - rows * width, vals, offsets)

    @classmethod
    def from_dense(cls, c: torch.Tensor) -> SparseCodes:
        """The nonzero entries of a dense (batch x width) code matrix."""
        batch, width = c.shape
        flat = c.reshape(-1).nonzero().squeeze(1)
        rows = torch.div(flat, width, rounding_mode="floor")
        return cls(
            rows,
            flat - rows * width,
            c.reshape(-1)[flat],
            torch.searchsorted(rows, torch.arange(batch, device=c.device)),
        )

    def dense(self, batch: int, width: int) -> torch.Tensor:
        out = torch.zeros(batch, width, dtype=self.vals.dtype, device=self.vals.device)
        out[self.rows, self.cols] = self.vals
        return out


def decode(codes: SparseCodes, W_dec: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Sum of value-weighted atoms per sample, plus bias."""
    out = F.embedding_bag(codes.cols, W_dec, codes.offsets, mode="sum", per_sample_weights=codes.vals)
    return out.add_(bias) if bias is not None else out


def accumulate_grads(
    grads: dict[str, torch.Tensor],
    codes: SparseCodes,
    W_dec: torch.Tensor,
    xc: torch.Tensor,
    g_out: torch.Tensor,
    pre_grad: float | torch.Tensor = 0.0,
    encoder_grad: str = "W_enc",
    through_zero: bool | torch.Tensor = False,
) -> None:
    """Add the gradients of a decode of ``codes`` whose output gradient is g_out to W_dec, the encoder and b_enc.

    ``pre_grad`` is added to every code's pre-activation gradient (an L1 penalty's slope): one constant, or
    a tensor with one slope per latent;
    ``encoder_grad`` names the gradient the encoder's part goes to (``W_dec`` for tied weights).
    Latents with value 0 (a selected but non-positive pre-activation) pass no gradient to the encoder,
    unless ``through_zero``: then the ReLU's gradient is taken as 1 (straight through), for every code or,
    given a mask with one entry per code, for the codes it marks.
    """
    g_rows = g_out[codes.rows]
    g_vals = (W_dec[codes.cols] * g_rows).sum(dim=1)
    if isinstance(pre_grad, torch.Tensor):
        g_vals.add_(pre_grad[codes.cols])
    elif pre_grad:
        g_vals.add_(pre_grad)
    if isinstance(through_zero, torch.Tensor):
        g_vals.mul_((codes.vals > 0) | through_zero)
    elif not through_zero:
        g_vals.mul_(codes.vals > 0)
    grads["W_dec"].index_add_(0, codes.cols, g_rows.mul_(codes.vals[:, None]))
    grads[encoder_grad].index_add_(0, codes.cols, xc[codes.rows].mul_(g_vals[:, None]))
    grads["b_enc"].index_add_(0, codes.cols, g_vals)


def batch_top(pre: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Values and flat indices of the ``count`` largest entries of pre, exactly.

    A full top-k over the flattened batch is slow on CPU, so a threshold is first read off a strided
    subsample (set a little low), the entries above it are gathered, and the exact top-k is taken among
    those; if the guess left too few candidates it falls back to the full top-k.
    """
    flat = pre.reshape(-1)
    total = flat.numel()
    if count >= total:
        return flat.clone(), torch.arange(total, device=flat.device)
    stride = max(total // 65_536, 1)
    sample = flat[::stride]
    keep = min(max(int(sample.numel() * count / total * 1.5) + 16, 1), sample.numel())
    guess = sample.topk(keep, sorted=False).values.min()
    candidates = (flat >= guess).nonzero().squeeze(1)
    if candidates.numel() < count:
        vals, idx = flat.topk(count, sorted=False)
        return vals, idx
    vals, pos = flat[candidates].topk(count, sorted=False)
    return vals, candidates[pos]
