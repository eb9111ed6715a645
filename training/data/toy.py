"""Toy data with known ground-truth features, as in Sharkey, Braun and Millidge (2022).

Each sample is a sparse non-negative combination of G unit-norm directions in d dimensions.
Feature i is active with probability proportional to ``decay**i``, rescaled so that on average
``mean_active`` features are active. With ``correlated`` on, which features are active together is
coupled through a random correlation matrix and a Gaussian copula (drawn afresh for every sample),
which keeps each feature's marginal probability. Active magnitudes are uniform on [0, 1), and a
sample with no active feature is given one, drawn by feature probability; the decay law's target is
lowered by the measured rate of empty samples so the realised mean count still hits ``mean_active``.

Batches are a pure function of ``(seed, step)``, so a run can stop and resume anywhere and every SAE
of a sweep sees the same data.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

_CALIBRATION_SAMPLES = 65_536


class ToyConfig(BaseModel):
    """Settings of the toy generator; the defaults are the study's."""

    dim: int = Field(256, gt=0, description="dimension d of the data")
    n_features: int = Field(512, gt=0, description="number G of ground-truth features")
    mean_active: float = Field(5.0, gt=0, description="mean number of active features per sample")
    decay: float = Field(0.99, gt=0, le=1, description="feature i has probability proportional to decay**i")
    correlated: bool = Field(True, description="couple feature co-activation through a Gaussian copula")
    seed: int = Field(0, description="seed of the features, the correlation and every batch")


def _probabilities(decay: float, n_features: int, mean_active: float) -> torch.Tensor:
    """Probabilities proportional to decay**i whose sum is mean_active, each capped at 1."""
    if mean_active > n_features:
        raise ValueError(f"mean_active {mean_active} exceeds the number of features {n_features}")
    weights = decay ** torch.arange(n_features, dtype=torch.float64)
    probs = torch.zeros_like(weights)
    capped = torch.zeros(n_features, dtype=torch.bool)
    for _ in range(n_features):
        free = ~capped
        remaining = mean_active - capped.sum().item()
        probs[free] = weights[free] * remaining / weights[free].sum()
        newly = free & (probs >= 1.0)
        if not newly.any():
            break
        capped |= newly
        probs[capped] = 1.0
    return probs


def _random_correlation(n_features: int, generator: torch.Generator) -> torch.Tensor:
    """A random correlation matrix: a symmetric uniform matrix shifted to be positive definite."""
    raw = torch.rand(n_features, n_features, generator=generator, dtype=torch.float64)
    sym = (raw + raw.T) / 2
    min_eig = torch.linalg.eigvalsh(sym).min().item()
    if min_eig <= 0:
        sym += (abs(min_eig) * 1.001 + 1e-3) * torch.eye(n_features, dtype=torch.float64)
    scale = sym.diagonal().rsqrt()
    return sym * scale[:, None] * scale[None, :]


class ToyData:
    """A seeded stream of toy batches with the ground-truth features that made them."""

    def __init__(self, config: ToyConfig) -> None:
        self.config = config
        gen = torch.Generator().manual_seed(config.seed)
        features = torch.randn(config.n_features, config.dim, generator=gen)
        self.features = features / features.norm(dim=1, keepdim=True)
        self.correlation_factor: torch.Tensor | None = None
        if config.correlated:
            corr = _random_correlation(config.n_features, gen)
            self.correlation_factor = torch.linalg.cholesky(corr).T.contiguous().float()
        self.probabilities = self._calibrated_probabilities()

    @property
    def dim(self) -> int:
        return self.config.dim

    def _thresholds(self, probs: torch.Tensor) -> torch.Tensor:
        """Normal quantiles of the probabilities: feature i fires when its latent z_i < t_i."""
        clipped = probs.clamp(1e-12, 1 - 1e-12)
        return (math.sqrt(2.0) * torch.erfinv(2 * clipped - 1)).float()

    def _calibrated_probabilities(self) -> torch.Tensor:
        """Feature probabilities whose realised mean count, empty-sample fix-up included, hits the target.

        Giving an empty sample one feature adds P(empty) to the mean; under correlation that can be a
        few percent, so the target of the decay law is lowered by the measured P(empty).
        """
        cfg = self.config
        target = cfg.mean_active
        probs = _probabilities(cfg.decay, cfg.n_features, target)
        gen = torch.Generator().manual_seed(cfg.seed + 7919)
        for _ in range(4):
            self._thresholds_f = self._thresholds(probs)
            active = self._active(_CALIBRATION_SAMPLES, gen)
            p_empty = (~active.any(dim=1)).float().mean().item()
            adjusted = max(cfg.mean_active - p_empty, 1e-3)
            if abs(adjusted - target) < 1e-4:
                break
            target = adjusted
            probs = _probabilities(cfg.decay, cfg.n_features, target)
        self._thresholds_f = self._thresholds(probs)
        return probs.float()

    def _active(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """Which features are active in n fresh samples (before the empty-sample fix-up)."""
        z = torch.randn(n, self.config.n_features, generator=gen)
        if self.correlation_factor is not None:
            z = z @ self.correlation_factor
        return z < self._thresholds_f

    def _generator(self, step: int, stream: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.config.seed * 1_000_003 + step * 7 + stream) % (2**63 - 1))

    def active_coefficients(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Active features of batch number ``step`` as (sample, feature, magnitude), sample-major."""
        gen = self._generator(step, 0)
        active = self._active(batch_size, gen)
        empty = ~active.any(dim=1)
        if empty.any():
            picks = torch.multinomial(self.probabilities, int(empty.sum()), replacement=True, generator=gen)
            active[empty.nonzero().squeeze(1), picks] = True
        rows, cols = active.nonzero(as_tuple=True)
        return rows, cols, torch.rand(rows.numel(), generator=gen)

    def coefficients(self, step: int, batch_size: int) -> torch.Tensor:
        """Feature coefficients (batch_size x G) of batch number ``step``."""
        rows, cols, vals = self.active_coefficients(step, batch_size)
        out = torch.zeros(batch_size, self.config.n_features)
        out[rows, cols] = vals
        return out

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        """Batch number ``step`` of the stream: batch_size x d samples."""
        rows, cols, vals = self.active_coefficients(step, batch_size)
        offsets = torch.searchsorted(rows, torch.arange(batch_size))
        return F.embedding_bag(cols, self.features, offsets, mode="sum", per_sample_weights=vals)

    def evaluation_set(self, n: int) -> torch.Tensor:
        """A fixed held-out set, drawn from a stream no training batch uses."""
        return self.batch(-1_000_000, n)
