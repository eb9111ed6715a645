"""Top-k SAE (Gao et al. 2024): each sample keeps its k largest pre-activations (ReLU'd).

Dead latents (silent for ``dead_after`` samples) are trained by the aux-k loss: the ``aux_k``
largest dead pre-activations per sample reconstruct the main model's residual, weighted by
``aux_coef`` and normalised by the residual's energy. Many dead latents are negative on every input,
where the ReLU passes aux-k no gradient. With ``aux_rescue`` a dead latent negative on every row of the
batch gets aux-k's gradient straight through its ReLU; with ``aux_straight_through`` every dead latent
aux-k picks does. With ``aux_rescue_bias`` that gradient moves only a stuck latent's encoder bias: Adam's
sign-like steps on a whole encoder row turn it towards the inputs' mean, and on our study activations such
latents became dense and let the decoder bias drift (1024 latents at 3e-3, 2048 over 6M rows). Any of the
three makes aux-k train only the dead latents' own parameters (the decoder bias follows the main loss).

With ``multi_topk`` (Gao et al. 2024, EleutherAI's sparsify) the loss adds the reconstruction from each
sample's ``MULTI_TOPK_FACTOR * k`` largest pre-activations, weighted ``MULTI_TOPK_WEIGHT``: the latents just
outside the top k keep learning to reconstruct, instead of only the k that win.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from training.saes import sparse_codes
from training.saes.base import SAEConfig, SparseAutoencoder, StepStats
from training.saes.resampling import resample_dead_latents
from training.saes.sparse_codes import SparseCodes

REVIVALS = ("aux_straight_through", "aux_rescue", "aux_rescue_bias")
AUX_DENSE_FACTOR = 16  # aux-k takes dense products while the dead latents are at most this many times k_aux
MULTI_TOPK_FACTOR = 4
MULTI_TOPK_WEIGHT = 1 / 8


@dataclass
class AuxBatch:
    """What aux-k needs from a step: the dead latents, their pre-activations (batch x dead), how many to choose
    per sample, which are negative on every row (for the rescues), the residual to model and the loss scale."""

    dead: torch.Tensor
    candidates: torch.Tensor
    k_aux: int
    stuck: torch.Tensor | None
    residual: torch.Tensor
    scale: torch.Tensor


class TopKSAE(SparseAutoencoder):
    arch = "topk"

    @classmethod
    def validate(cls, config: SAEConfig) -> None:
        if config.k is None:
            raise ValueError(f"arch {cls.arch} needs k")
        if config.k > config.dict_size:
            raise ValueError(f"k={config.k} exceeds the dictionary size {config.dict_size}")
        chosen = [name for name in REVIVALS if getattr(config, name)]
        if len(chosen) > 1:
            raise ValueError(f"{' and '.join(chosen)} are alternatives: choose one")
        if config.multi_topk and cls.arch != "topk":
            raise ValueError(f"multi_topk is for arch topk, not {cls.arch}")

    def __init__(self, config: SAEConfig) -> None:
        super().__init__(config)
        self.training_k = config.k

    def set_progress(self, step: int, total_steps: int) -> None:
        """Anneal the training k linearly from k_start * k down to k."""
        cfg = self.config
        span = cfg.k_anneal * total_steps
        left = max(0.0, 1.0 - step / span) if span > 0 else 0.0
        self.training_k = min(round(cfg.k * (1 + (cfg.k_start - 1) * left)), cfg.dict_size)

    def select(self, pre: torch.Tensor, training: bool) -> SparseCodes:
        """The active latents of a batch of pre-activations."""
        k = self.training_k if training else self.config.k
        vals, idx = sparse_codes.row_topk(pre, k)
        return SparseCodes.from_topk(vals.relu_(), idx)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.select(self.pre_activations(x), training=False).dense(x.shape[0], self.config.dict_size)

    def firing(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        codes = self.select(self.pre_activations(x), training=False)
        positive = codes.vals > 0
        rows, latents, values = codes.rows[positive], codes.cols[positive], codes.vals[positive]
        order = torch.argsort(rows * self.config.dict_size + latents)
        return rows[order], latents[order], values[order]

    def reference_loss(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        pre = (x - params["b_dec"]) @ params["W_enc"].T + params["b_enc"]
        codes = self.select(pre.detach(), training=True)
        mask = torch.zeros_like(pre, dtype=torch.bool)
        mask[codes.rows, codes.cols] = True
        c = torch.relu(pre) * mask
        x_hat = c @ params["W_dec"] + params["b_dec"]
        loss = ((x - x_hat) ** 2).sum(dim=1).mean()
        if self.config.multi_topk:
            wide = torch.zeros_like(mask).scatter_(1, pre.detach().topk(self._multi_k(), dim=1).indices, True)
            x_wide = (torch.relu(pre) * wide) @ params["W_dec"] + params["b_dec"]
            loss = loss + MULTI_TOPK_WEIGHT * ((x - x_wide) ** 2).sum(dim=1).mean()
        return loss

    def _multi_k(self) -> int:
        return min(MULTI_TOPK_FACTOR * self.training_k, self.config.dict_size)

    def _multi_topk(self, pre: torch.Tensor, x: torch.Tensor, xc: torch.Tensor) -> torch.Tensor:
        """Add the gradients of the multi-TopK term (reconstruction from the top 4k, weighted 1/8); return the
        gradient of that term with respect to its reconstruction, summed over the batch (for the decoder bias)."""
        vals, idx = sparse_codes.row_topk(pre, self._multi_k())
        codes = SparseCodes.from_topk(vals.relu_(), idx)
        err = sparse_codes.decode(codes, self.W_dec, self.b_dec).sub_(x)
        g_out = err.mul_(2.0 * MULTI_TOPK_WEIGHT / x.shape[0])
        sparse_codes.accumulate_grads(self.grads, codes, self.W_dec, xc, g_out)
        return g_out.sum(dim=0)

    def compute_grads(self, x: torch.Tensor, want_stats: bool) -> StepStats | None:
        b = x.shape[0]
        g = self.grads
        for t in g.values():
            t.zero_()
        xc = x - self.b_dec
        pre = torch.addmm(self.b_enc, xc, self.W_enc.T)
        codes = self.select(pre, training=True)
        err = sparse_codes.decode(codes, self.W_dec, self.b_dec).sub_(x)
        g_out = err * (2.0 / b)
        sparse_codes.accumulate_grads(g, codes, self.W_dec, xc, g_out)
        decoded = g_out.sum(dim=0)
        if self.config.multi_topk:
            decoded.add_(self._multi_topk(pre, x, xc))
        dead_only = any(getattr(self.config, name) for name in REVIVALS)
        if dead_only:
            g["b_dec"].copy_(decoded).sub_(g["b_enc"] @ self.W_enc)
        aux = self._aux_k(pre, xc, err) if self.config.aux_coef > 0 else 0.0
        if not dead_only:
            g["b_dec"].copy_(decoded).sub_(g["b_enc"] @ self.W_enc)
        fired = torch.zeros(self.config.dict_size, dtype=torch.bool, device=x.device)
        fired[codes.cols[codes.vals > 0]] = True
        self._track_firing(fired, b)
        if not want_stats:
            return None
        l0 = torch.count_nonzero(codes.vals).item() / b
        return self._stats(x, err.pow(2).sum().item(), aux, l0)

    def _aux_k(self, pre: torch.Tensor, xc: torch.Tensor, err: torch.Tensor) -> float:
        """Add the aux-k loss gradients (dead latents modelling the residual); return its value."""
        dead = (self.samples_since_fired >= self.config.dead_after).nonzero().squeeze(1)
        if dead.numel() == 0:
            return 0.0
        k_aux = min(self.config.aux_k or 2 * self.config.k, dead.numel())
        candidates = pre if dead.numel() == pre.shape[1] else pre.index_select(1, dead)
        stuck = candidates.amax(dim=0) <= 0 if self.config.aux_rescue or self.config.aux_rescue_bias else None
        residual = err.neg()
        scale = 2.0 * self.config.aux_coef / residual.pow(2).sum().clamp_min(1e-12)
        aux = AuxBatch(dead, candidates, k_aux, stuck, residual, scale)
        aux_err = self._aux_dense(aux, xc) if dead.numel() <= AUX_DENSE_FACTOR * k_aux else self._aux_sparse(aux, xc)
        return (aux_err.pow(2).sum() * scale / 2.0).item()

    def _aux_sparse(self, aux: AuxBatch, xc: torch.Tensor) -> torch.Tensor:
        """Aux-k over many dead latents: the codes are sparse (k_aux per sample), so the decode is an
        embedding-bag and the gradients are index-adds over the chosen (sample, latent) pairs."""
        dead, candidates, stuck = aux.dead, aux.candidates, aux.stuck
        vals, local = sparse_codes.row_topk(candidates, aux.k_aux)
        stuck_codes = stuck.index_select(0, local.reshape(-1)) if stuck is not None else None
        through = stuck_codes if self.config.aux_rescue else self.config.aux_straight_through
        codes = SparseCodes.from_topk(vals.relu_(), dead.index_select(0, local.reshape(-1)).view_as(local))
        aux_err = sparse_codes.decode(codes, self.W_dec, None).sub_(aux.residual)
        g_aux = aux_err * aux.scale
        sparse_codes.accumulate_grads(self.grads, codes, self.W_dec, xc, g_aux, through_zero=through)
        if self.config.aux_rescue_bias and stuck_codes.any():
            cols = codes.cols[stuck_codes]
            g_pre = (self.W_dec.index_select(0, cols) * g_aux.index_select(0, codes.rows[stuck_codes])).sum(dim=1)
            self.grads["b_enc"].index_add_(0, cols, g_pre)
        return aux_err

    def _aux_dense(self, aux: AuxBatch, xc: torch.Tensor) -> torch.Tensor:
        """Aux-k over few dead latents: dense products over the dead latents' columns (batch x dead) cost
        less than gathering and index-adding k_aux atoms per sample, and with k_aux at least the dead count
        every dead latent is chosen, so no top-k is needed.

        ``aux_rescue_bias``'s straight-through gradient (a stuck latent's encoder bias only, see the module
        docstring) is added here too."""
        dead, candidates, stuck = aux.dead, aux.candidates, aux.stuck
        if aux.k_aux == candidates.shape[1]:
            selected = None
            codes = candidates.clamp_min(0.0)
        else:
            vals, local = sparse_codes.row_topk(candidates, aux.k_aux)
            selected = torch.zeros_like(candidates, dtype=torch.bool).scatter_(1, local, True)
            codes = torch.zeros_like(candidates).scatter_(1, local, vals.relu_())
        atoms = self.W_dec.index_select(0, dead)
        aux_err = (codes @ atoms).sub_(aux.residual)
        g_aux = aux_err * aux.scale
        g = self.grads
        g["W_dec"].index_add_(0, dead, codes.T @ g_aux)
        g_codes = g_aux @ atoms.T
        if self.config.aux_straight_through:
            passes = selected if selected is not None else torch.ones_like(codes, dtype=torch.bool)
        else:
            passes = codes > 0
            if self.config.aux_rescue:
                passes |= stuck if selected is None else selected & stuck
        g_pre = g_codes * passes
        g["W_enc"].index_add_(0, dead, g_pre.T @ xc)
        g_bias = g_pre.sum(dim=0)
        if self.config.aux_rescue_bias:
            g_bias += (g_codes * (stuck if selected is None else selected & stuck)).sum(dim=0)
        g["b_enc"].index_add_(0, dead, g_bias)
        return aux_err

    def after_step(self, x: torch.Tensor, step: int, total_steps: int) -> list[torch.Tensor]:
        return resample_dead_latents(self, x, step, total_steps, encoder_gain=1.0)
