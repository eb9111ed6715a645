"""The study's SAE with tied weights: the encoder is the transpose of the unit-norm decoder.

Same loss as ``relu``; only ``W_dec`` (shared), ``b_enc`` and ``b_dec`` are trained.
"""

from __future__ import annotations

import torch

from training.saes.base import SparseAutoencoder, StepStats
from training.saes.resampling import resample_dead_latents


class TiedSAE(SparseAutoencoder):
    arch = "tied"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.sync_encoder()

    def after_init(self, sample: torch.Tensor) -> None:
        self.sync_encoder()

    def params(self) -> dict[str, torch.Tensor]:
        return {"b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec}

    def sync_encoder(self) -> None:
        """Keep ``W_enc`` equal to the decoder (it is saved for readers that expect it)."""
        self.W_enc.copy_(self.W_dec)

    def normalise_decoder(self) -> None:
        super().normalise_decoder()
        self.sync_encoder()

    def inference_buffers(self) -> dict[str, torch.Tensor]:
        return {"W_enc": self.W_enc}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_tensors(tensors)
        self.sync_encoder()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b_enc, x - self.b_dec, self.W_dec.T).relu_()

    def reference_loss(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        c = torch.relu((x - params["b_dec"]) @ params["W_dec"].T + params["b_enc"])
        x_hat = c @ params["W_dec"] + params["b_dec"]
        return ((x - x_hat) ** 2).sum(dim=1).mean() + self.config.l1 * c.abs().sum(dim=1).mean()

    def compute_grads(self, x: torch.Tensor, want_stats: bool) -> StepStats | None:
        b = x.shape[0]
        g = self.grads
        xc = x - self.b_dec
        c = torch.addmm(self.b_enc, xc, self.W_dec.T).relu_()
        err = torch.addmm(self.b_dec, c, self.W_dec).sub_(x)
        g_out = err * (2.0 / b)
        activity = c.sum(dim=0)
        torch.mm(c.T, g_out, out=g["W_dec"])
        # sign() of a ReLU output is its 0/1 activity mask; branch-free ops are several times faster
        # on CPU than comparisons or threshold_backward on data that is half zeros.
        mask = c.sign_()
        l1_grad = torch.full((1,), self.config.l1 / b)
        g_pre = torch.addmm(l1_grad, g_out, self.W_dec.T).mul_(mask)
        g["W_dec"].addmm_(g_pre.T, xc)
        torch.sum(g_pre, dim=0, out=g["b_enc"])
        torch.sub(g_out.sum(dim=0), g["b_enc"] @ self.W_dec, out=g["b_dec"])
        self._track_firing(activity > 0, b)
        if not want_stats:
            return None
        l0 = mask.sum().item() / b
        return self._stats(x, err.pow(2).sum().item(), self.config.l1 * activity.sum().item() / b, l0)

    def after_step(self, x: torch.Tensor, step: int, total_steps: int) -> list[torch.Tensor]:
        return resample_dead_latents(self, x, step, total_steps)
