"""Data-dependent initialisation helpers."""

from __future__ import annotations

import torch


def geometric_median(points: torch.Tensor, iterations: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """The point minimising the summed Euclidean distance to ``points`` (Weiszfeld's algorithm).

    Used as the decoder bias at initialisation: unlike the mean it is not dragged by the heavy tail of
    large samples, so the encoder starts centred on the bulk of the data.
    """
    pts = points.double()
    median = pts.mean(dim=0)
    for _ in range(iterations):
        dist = (pts - median).norm(dim=1).clamp_min(1e-10)
        weights = 1.0 / dist
        new = (weights[:, None] * pts).sum(dim=0) / weights.sum()
        moved = (new - median).norm().item()
        median = new
        if moved < tol * max(median.norm().item(), 1.0):
            break
    return median.to(points.dtype)
