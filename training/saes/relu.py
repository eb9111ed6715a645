"""The study's SAE: untied, encoder bias, ReLU, unit-norm decoder atoms, loss MSE + l1 * |c|_1.

The loss per sample is ``|x - x_hat|^2 + l1 * |c|_1``, averaged over the batch. Dead latents are
resampled towards inputs the dictionary explains worst, early in training.

With ``decoder_norm="penalised"`` (Anthropic's April 2024 update) the atoms keep whatever norm training
gives them and the penalty is ``l1 * sum_i c_i |d_i|``: the same objective (scaling an atom up and its
code down changes neither term), reached by a different path, with the L1 coefficient optionally warmed up
from zero (``l1_warmup``).
"""

from __future__ import annotations

import torch

from training.saes import sparse_codes
from training.saes.base import SparseAutoencoder, StepStats
from training.saes.resampling import resample_dead_latents
from training.saes.sparse_codes import SparseCodes


class ReluSAE(SparseAutoencoder):
    arch = "relu"

    encoder_param = "W_enc"  # the tied variant encodes with the decoder itself
    sparse_below = 0.05  # firing fraction under which a step's gradients go over the firing pairs only

    def __init__(self, config) -> None:
        super().__init__(config)
        self.l1_now = config.l1  # this step's coefficient: set_progress warms it up during training

    @classmethod
    def validate(cls, config) -> None:
        super().validate(config)
        if config.decoder_norm == "penalised" and cls.encoder_param != "W_enc":
            raise ValueError("decoder_norm 'penalised' needs an untied encoder")

    def set_progress(self, step: int, total_steps: int) -> None:
        """Warm the L1 coefficient up linearly over the first ``l1_warmup`` of the horizon."""
        span = self.config.l1_warmup * total_steps
        self.l1_now = self.config.l1 * (min(1.0, (step + 1) / span) if span > 0 else 1.0)

    def atom_weights(self) -> torch.Tensor | None:
        """Each latent's L1 weight: its atom's norm for penalised decoders, None (all 1) for unit atoms."""
        return self.W_dec.norm(dim=1) if self.config.decoder_norm == "penalised" else None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b_enc, x - self.b_dec, getattr(self, self.encoder_param).T).relu_()

    def encode_pairs(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        return self.pair_pre_activations(x, latents, getattr(self, self.encoder_param)).relu_()

    def reference_loss(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        c = torch.relu((x - params["b_dec"]) @ params[self.encoder_param].T + params["b_enc"])
        x_hat = c @ params["W_dec"] + params["b_dec"]
        if self.config.decoder_norm == "penalised":
            c = c * params["W_dec"].norm(dim=1)
        return ((x - x_hat) ** 2).sum(dim=1).mean() + self.l1_now * c.abs().sum(dim=1).mean()

    def sparsity_penalty(self, codes: torch.Tensor) -> torch.Tensor:
        weights = self.atom_weights()
        return self.config.l1 * (codes.sum(dim=1).mean() if weights is None else (codes @ weights).mean())

    def compute_grads(self, x: torch.Tensor, want_stats: bool) -> StepStats | None:
        b = x.shape[0]
        encoder = getattr(self, self.encoder_param)
        xc = x - self.b_dec
        c = torch.addmm(self.b_enc, xc, encoder.T).relu_()
        # The path is chosen from about 64 of the samples: counting every firing pair would cost as much
        # as a dense product while a third of them fire (counting branches on such mixed data).
        sample = c[:: max(b // 64, 1)]
        grads = (
            self._sparse_grads
            if torch.sign(sample).sum().item() <= self.sparse_below * sample.numel()
            else self._dense_grads
        )
        err, fired, counts = grads(x, xc, c, encoder, want_stats)
        self._track_firing(fired, b)
        if counts is None:
            return None
        activity, active = counts
        return self._stats(x, err.pow(2).sum().item(), self.l1_now * activity / b, active / b)

    def _add_atom_norm_grads(self, activity: torch.Tensor, weights: torch.Tensor | None, b: int) -> None:
        """Penalised atoms: the penalty l1 * c_i * |d_i| pulls each atom's norm down by its summed activity."""
        if weights is not None:
            self.grads["W_dec"].addcmul_(self.W_dec, (activity * (self.l1_now / b) / weights.clamp_min(1e-8))[:, None])

    def _weighted_activity(self, activity: torch.Tensor, weights: torch.Tensor | None) -> float:
        return (activity.sum() if weights is None else activity @ weights).item()

    def _dense_grads(self, x: torch.Tensor, xc: torch.Tensor, c: torch.Tensor, encoder: torch.Tensor, want_stats: bool):
        """Gradients with dense products: the cheaper way while many latents fire (early training).

        Returns the error, which latents fired, and (when ``want_stats``) the summed activity and firing count."""
        b = x.shape[0]
        g = self.grads
        err = torch.addmm(self.b_dec, c, self.W_dec).sub_(x)
        g_out = err * (2.0 / b)
        activity = c.sum(dim=0)
        weights = self.atom_weights()
        torch.mm(c.T, g_out, out=g["W_dec"])
        self._add_atom_norm_grads(activity, weights, b)
        # sign() of a ReLU output is its 0/1 activity mask; branch-free ops are several times faster
        # on CPU than comparisons or threshold_backward on data that is half zeros.
        mask = c.sign_()
        l1_grad = torch.full((1,), self.l1_now / b, device=x.device) if weights is None else weights * (self.l1_now / b)
        g_pre = torch.addmm(l1_grad, g_out, self.W_dec.T).mul_(mask)
        if self.encoder_param == "W_dec":
            g["W_dec"].addmm_(g_pre.T, xc)
        else:
            torch.mm(g_pre.T, xc, out=g["W_enc"])
        torch.sum(g_pre, dim=0, out=g["b_enc"])
        torch.sub(g_out.sum(dim=0), g["b_enc"] @ encoder, out=g["b_dec"])
        counts = (self._weighted_activity(activity, weights), mask.sum().item()) if want_stats else None
        return err, activity > 0, counts

    def _sparse_grads(
        self, x: torch.Tensor, xc: torch.Tensor, c: torch.Tensor, encoder: torch.Tensor, want_stats: bool
    ):
        """Gradients over the firing (sample, latent) pairs only: decoding and every weight gradient
        touch just those atoms, so a trained dictionary (a few percent firing) costs one dense product."""
        b, n = c.shape
        g = self.grads
        codes = SparseCodes.from_dense(c)
        err = sparse_codes.decode(codes, self.W_dec, self.b_dec).sub_(x)
        g_out = err * (2.0 / b)
        for t in g.values():
            t.zero_()
        encoder_grad = "W_dec" if self.encoder_param == "W_dec" else "W_enc"
        weights = self.atom_weights()
        slope = self.l1_now / b if weights is None else weights * (self.l1_now / b)
        activity = torch.zeros(n, device=c.device).index_add_(0, codes.cols, codes.vals)
        sparse_codes.accumulate_grads(g, codes, self.W_dec, xc, g_out, slope, encoder_grad)
        self._add_atom_norm_grads(activity, weights, b)
        torch.sub(g_out.sum(dim=0), g["b_enc"] @ encoder, out=g["b_dec"])
        counts = (self._weighted_activity(activity, weights), codes.vals.numel()) if want_stats else None
        return err, activity > 0, counts

    def after_step(self, x: torch.Tensor, step: int, total_steps: int) -> list[torch.Tensor]:
        return resample_dead_latents(self, x, step, total_steps)
