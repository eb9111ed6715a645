"""Sparse latent codes (row, latent, value triplets) and their decoder products.

The top-k family activates a few latents per sample, and so does a trained ReLU dictionary, so
decoding and every gradient touch only those atoms: the decoder is an embedding-bag over the chosen
rows and the weight gradients are index-adds. Only the encoder's dense product remains.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

NONZERO_SLABS = 8
NONZERO_MIN_WIDTH = 1024  # narrower code matrices: one plain nonzero is faster
TOPK_GROUP = 16  # entries per group of row_topk's prefilter
TOPK_MIN_WIDTH = 2048  # narrower rows: one plain top-k is faster


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
        """The nonzero entries of a dense (batch x width) code matrix of non-negative values (ReLU codes)."""
        batch, width = c.shape
        flat = nonzero_codes(c)
        rows = torch.div(flat, width, rounding_mode="floor")
        return cls(
            rows,
            flat - rows * width,
            c.reshape(-1).index_select(0, flat),
            torch.searchsorted(rows, torch.arange(batch, device=c.device)),
        )

    def dense(self, batch: int, width: int) -> torch.Tensor:
        out = torch.zeros(batch, width, dtype=self.vals.dtype, device=self.vals.device)
        out[self.rows, self.cols] = self.vals
        return out


def nonzero_codes(c: torch.Tensor) -> torch.Tensor:
    """Flat indices, ascending, of the positive entries of a non-negative (batch x width) matrix.

    ``nonzero`` over a whole sparse code matrix is slow on CPU (one branchy pass over every entry), so the
    matrix is cut into ``NONZERO_SLABS`` slabs of whole rows, the slabs' elementwise maximum (a vectorised
    pass) names the columns of the flattened slab that hold any positive entry, and only those columns
    are searched. Reading the hits slab by slab keeps them in ascending order."""
    flat = c.reshape(-1)
    batch, width = c.shape
    if c.device.type != "cpu" or width < NONZERO_MIN_WIDTH or batch % NONZERO_SLABS:
        return flat.nonzero().squeeze(1)
    span = flat.numel() // NONZERO_SLABS
    stacked = flat.view(NONZERO_SLABS, span)
    hit = stacked.amax(dim=0).nonzero().squeeze(1)
    slab, column = stacked.index_select(1, hit).nonzero().unbind(1)
    return slab * span + hit.index_select(0, column)


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
    g_rows = g_out.index_select(0, codes.rows)
    g_vals = (W_dec.index_select(0, codes.cols) * g_rows).sum(dim=1)
    if isinstance(pre_grad, torch.Tensor):
        g_vals.add_(pre_grad.index_select(0, codes.cols))
    elif pre_grad:
        g_vals.add_(pre_grad)
    if isinstance(through_zero, torch.Tensor):
        g_vals.mul_((codes.vals > 0) | through_zero)
    elif not through_zero:
        g_vals.mul_(codes.vals > 0)
    grads["W_dec"].index_add_(0, codes.cols, g_rows.mul_(codes.vals[:, None]))
    grads[encoder_grad].index_add_(0, codes.cols, xc.index_select(0, codes.rows).mul_(g_vals[:, None]))
    grads["b_enc"].index_add_(0, codes.cols, g_vals)


def row_topk(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest entries of each row of pre (values, column indices), unsorted, exactly.

    A plain top-k over wide rows is slow on CPU, so each row is cut into groups of ``TOPK_GROUP`` entries
    (columns j, j + w/g, j + 2w/g, ...; a group's maximum is then a vectorised reduction) and the top k
    entries are sought only in the k groups with the largest maxima. Those maxima are k distinct entries, so
    the row's k-th largest entry is at least the smallest of them, and a group holding any of the row's top
    k has a maximum at least that large: it is one of the k chosen (ties can change indices, not values)."""
    b, width = pre.shape
    span = width // TOPK_GROUP
    if pre.device.type != "cpu" or width < TOPK_MIN_WIDTH or width % TOPK_GROUP or span < 4 * k:
        return pre.topk(k, dim=1, sorted=False)
    groups = pre.view(b, TOPK_GROUP, span).amax(dim=1).topk(k, dim=1, sorted=False).indices
    cols = (groups.unsqueeze(2) + torch.arange(0, width, span, device=pre.device)).reshape(b, -1)
    vals, pos = pre.gather(1, cols).topk(k, dim=1, sorted=False)
    return vals, cols.gather(1, pos)


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
