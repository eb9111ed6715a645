"""An SAE on raw activations in the field's common form, and the exact conversions to and from ours.

Our SAEs are trained on rows rescaled by ``scale`` (to unit mean squared norm). Encoding and decoding
are affine up to the nonlinearity, so the scale folds into the weights exactly: the raw-space SAE
computes the same latent codes on ``x`` as ours on ``scale * x``, and its reconstruction is ours
divided by ``scale``. Nothing is approximated, so a round trip gives the tensors back up to rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from training.saes import SAEConfig, SparseAutoencoder, build_sae

# Our architectures and the raw form each is written as; batchtopk is served at inference as a
# JumpReLU whose threshold is the batch threshold it learned (the same for every latent).
RAW_ARCH = {"relu": "standard", "tied": "standard", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu"}


class FormatError(ValueError):
    """A foreign SAE folder that cannot be read faithfully, or an SAE a format cannot express."""


@dataclass
class RawSAE:
    """An SAE on raw activations: ``codes = f((x - b_dec) @ W_enc + b_enc)``, ``x_hat = codes @ W_dec + b_dec``.

    ``arch`` is ``standard`` (ReLU), ``topk`` (the k largest, ReLU'd) or ``jumprelu`` (ReLU'd, and
    pre-activations at or below ``threshold`` zeroed). ``metadata`` holds what is known of where it was
    trained, as its source wrote it. ``source_format`` and ``source_cfg`` are the layout it was read from and
    that layout's config file as written, so an export in the same layout keeps every field; ``conversions``
    says in words what reading folded into the weights (each exact, codes and reconstructions unchanged).
    """

    arch: str
    W_enc: torch.Tensor  # [d_in, d_sae]
    b_enc: torch.Tensor  # [d_sae]
    W_dec: torch.Tensor  # [d_sae, d_in]
    b_dec: torch.Tensor  # [d_in]
    k: int | None = None
    threshold: torch.Tensor | None = None  # [d_sae], jumprelu only
    metadata: dict = field(default_factory=dict)
    source_format: str | None = None
    source_cfg: dict | None = None
    conversions: list[str] = field(default_factory=list)

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    def check_shapes(self) -> None:
        """Raise FormatError unless the tensors agree with each other and with the architecture."""
        d_in, d_sae = self.W_enc.shape
        expected = {"b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise FormatError(f"{name} has shape {tuple(getattr(self, name).shape)}, expected {shape}")
        if self.arch == "topk" and (self.k is None or not 0 < self.k <= d_sae):
            raise FormatError(f"a topk SAE needs k between 1 and d_sae={d_sae}, got {self.k}")
        if self.arch == "jumprelu" and (self.threshold is None or tuple(self.threshold.shape) != (d_sae,)):
            raise FormatError(f"a jumprelu SAE needs a threshold of shape ({d_sae},)")
        if self.arch not in ("standard", "topk", "jumprelu"):
            raise FormatError(f"unknown architecture {self.arch!r}: standard, topk and jumprelu are supported")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent codes of raw activations, by the formula the formats document."""
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        if self.arch == "standard":
            return pre.relu()
        if self.arch == "jumprelu":
            return pre.relu() * (pre > self.threshold)
        values, indices = pre.topk(self.k, dim=1)
        return torch.zeros_like(pre).scatter_(1, indices, values.relu())

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes @ self.W_dec + self.b_dec


def to_raw(sae: SparseAutoencoder, scale: float, metadata: dict | None = None) -> RawSAE:
    """Our SAE (on rows multiplied by ``scale``) as the equivalent SAE on raw rows."""
    arch = sae.config.arch
    if arch not in RAW_ARCH:
        raise FormatError(f"architecture {arch!r} has no raw form: {', '.join(RAW_ARCH)} do")
    threshold = None
    if arch == "jumprelu":
        threshold = sae.log_threshold.exp()
    elif arch == "batchtopk":
        # Inference keeps pre > threshold and pre > 0: a JumpReLU at max(threshold, 0).
        threshold = sae.threshold.clamp(min=0).expand(sae.config.dict_size)
    raw = RawSAE(
        arch=RAW_ARCH[arch],
        W_enc=(sae.W_enc.T * scale).contiguous(),
        b_enc=sae.b_enc.clone(),
        W_dec=(sae.W_dec / scale).contiguous(),
        b_dec=sae.b_dec / scale,
        k=sae.config.k if arch == "topk" else None,
        threshold=None if threshold is None else threshold.contiguous().clone(),
        metadata=dict(metadata or {}),
    )
    raw.metadata.setdefault("monosemantic_arch", arch)
    return raw


def from_raw(raw: RawSAE, scale: float, tag: str = "") -> SparseAutoencoder:
    """The raw-space SAE as one of ours on rows multiplied by ``scale`` (its codes unchanged).

    ``standard`` becomes relu and ``jumprelu`` jumprelu, each with l1 0 (the training objective is not
    part of either format); ``topk`` keeps its k.
    """
    raw.check_shapes()
    arch = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}[raw.arch]
    sparsity = {"k": raw.k} if arch == "topk" else {"l1": 0.0}
    config = SAEConfig(arch=arch, d_in=raw.d_in, dict_size=raw.d_sae, tag=tag, **sparsity)
    sae = build_sae(config)
    with torch.no_grad():
        sae.W_enc.copy_(raw.W_enc.T / scale)
        sae.b_enc.copy_(raw.b_enc)
        sae.W_dec.copy_(raw.W_dec * scale)
        sae.b_dec.copy_(raw.b_dec * scale)
        if arch == "jumprelu":
            sae.log_threshold.copy_(raw.threshold.clamp(min=0).log())
    return sae


def finite_scale(scale: float) -> float:
    """The scale, checked: a run's activations with zero or non-finite mean squared norm cannot be rescaled."""
    if not math.isfinite(scale) or scale <= 0:
        raise FormatError(f"activation scale {scale} is not a positive number: the run's activations are broken")
    return scale
