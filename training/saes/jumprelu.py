"""JumpReLU SAE (Rajamanoharan et al. 2024): c = pre * [pre > theta], with an L0 penalty.

Each latent has a learned threshold theta (kept as log theta). The step function has no useful
gradient, so theta learns through the paper's straight-through estimator: a rectangle kernel of width
``jump_bandwidth`` around the threshold. The loss per sample is ``|x - x_hat|^2 + l1 * L0``.
"""

from __future__ import annotations

import math

import torch

from training.saes.base import SAEConfig, SparseAutoencoder, StepStats


class _Step(torch.autograd.Function):
    """Heaviside step [pre > theta] with the straight-through gradient to theta."""

    @staticmethod
    def forward(ctx, pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        pre, theta = ctx.saved_tensors
        window = ((pre - theta).abs() < ctx.eps / 2).to(pre.dtype)
        return torch.zeros_like(pre), (-grad * window / ctx.eps).sum(dim=0), None


class _Jump(torch.autograd.Function):
    """pre * [pre > theta], passing gradient to pre where active and to theta through the kernel."""

    @staticmethod
    def forward(ctx, pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        pre, theta = ctx.saved_tensors
        window = ((pre - theta).abs() < ctx.eps / 2).to(pre.dtype)
        return grad * (pre > theta), (-grad * window * theta / ctx.eps).sum(dim=0), None


class JumpReluSAE(SparseAutoencoder):
    arch = "jumprelu"

    def __init__(self, config: SAEConfig) -> None:
        self.log_threshold = torch.full((config.dict_size,), math.log(config.jump_threshold))
        super().__init__(config)

    def params(self) -> dict[str, torch.Tensor]:
        return {**super().params(), "log_threshold": self.log_threshold}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_activations(x)
        return pre.mul_(pre > self.log_threshold.exp())

    def encode_pairs(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        pre = self.pair_pre_activations(x, latents, self.W_enc)
        return pre.mul_(pre > self.log_threshold.exp()[latents])

    def reference_loss(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        eps = self.config.jump_bandwidth
        theta = params["log_threshold"].exp()
        pre = (x - params["b_dec"]) @ params["W_enc"].T + params["b_enc"]
        c = _Jump.apply(pre, theta, eps)
        l0 = _Step.apply(pre, theta, eps).sum(dim=1).mean()
        x_hat = c @ params["W_dec"] + params["b_dec"]
        return ((x - x_hat) ** 2).sum(dim=1).mean() + self.config.l1 * l0

    def sparsity_penalty(self, codes: torch.Tensor) -> torch.Tensor:
        return self.config.l1 * (codes > 0).sum(dim=1).double().mean()

    def compute_grads(self, x: torch.Tensor, want_stats: bool) -> StepStats | None:
        b = x.shape[0]
        eps = self.config.jump_bandwidth
        g = self.grads
        theta = self.log_threshold.exp()
        xc = x - self.b_dec
        pre = torch.addmm(self.b_enc, xc, self.W_enc.T)
        shifted = pre - theta
        # 0/1 masks built from sign() rather than comparisons: branch-free and much faster on CPU.
        active = shifted.sign().clamp_(min=0)
        window = shifted.abs_().neg_().add_(eps / 2).sign_().clamp_(min=0)
        c = pre.mul_(active)
        err = torch.addmm(self.b_dec, c, self.W_dec).sub_(x)
        g_out = err * (2.0 / b)
        torch.mm(c.T, g_out, out=g["W_dec"])
        g_c = g_out @ self.W_dec.T
        g_theta = (g_c * window).sum(dim=0).mul_(-theta / eps)
        g_theta.sub_(window.sum(dim=0) * (self.config.l1 / (b * eps)))
        torch.mul(g_theta, theta, out=g["log_threshold"])
        g_pre = g_c.mul_(active)
        torch.mm(g_pre.T, xc, out=g["W_enc"])
        torch.sum(g_pre, dim=0, out=g["b_enc"])
        torch.sub(g_out.sum(dim=0), g["b_enc"] @ self.W_enc, out=g["b_dec"])
        counts = active.sum(dim=0)
        self._track_firing(counts > 0, b)
        if not want_stats:
            return None
        l0 = counts.sum().item() / b
        return self._stats(x, err.pow(2).sum().item(), self.config.l1 * l0, l0)
