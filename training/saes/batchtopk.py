"""BatchTopK SAE (Bussmann et al. 2024): the k x batch largest pre-activations of a whole batch.

Samples may use more or fewer than k latents as long as the batch averages k. Inference cannot
depend on the batch, so training keeps a running estimate of the smallest selected activation and
inference keeps every pre-activation above that threshold.
"""

from __future__ import annotations

import torch

from training.saes import sparse_codes
from training.saes.sparse_codes import SparseCodes
from training.saes.topk import TopKSAE

THRESHOLD_MOMENTUM = 0.99


class BatchTopKSAE(TopKSAE):
    arch = "batchtopk"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.threshold = torch.zeros(())

    def buffers(self) -> dict[str, torch.Tensor]:
        return {**super().buffers(), "threshold": self.threshold}

    def inference_buffers(self) -> dict[str, torch.Tensor]:
        return {"threshold": self.threshold}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_tensors(tensors)
        if "threshold" in tensors:
            self.threshold = tensors["threshold"].clone().reshape(())

    def encode_pairs(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        pre = self.pair_pre_activations(x, latents, self.W_enc)
        return pre.mul_((pre > self.threshold) & (pre > 0))

    def select(self, pre: torch.Tensor, training: bool) -> SparseCodes:
        b, n = pre.shape
        if not training:
            active = (pre > self.threshold) & (pre > 0)
            rows, cols = active.nonzero(as_tuple=True)
            return SparseCodes.from_flat(rows * n + cols, pre[rows, cols], b, n)
        vals, flat_idx = sparse_codes.batch_top(pre, self.training_k * b)
        vals = vals.relu_()
        positive = vals[vals > 0]
        if positive.numel():
            smallest = positive.min()
            if self.threshold.item() == 0:
                self.threshold = smallest.clone()
            else:
                self.threshold.mul_(THRESHOLD_MOMENTUM).add_(smallest, alpha=1 - THRESHOLD_MOMENTUM)
        return SparseCodes.from_flat(flat_idx, vals, b, n)

    def reference_loss(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        pre = (x - params["b_dec"]) @ params["W_enc"].T + params["b_enc"]
        saved = self.threshold.clone()
        codes = self.select(pre.detach(), training=True)
        self.threshold = saved
        mask = torch.zeros_like(pre, dtype=torch.bool)
        mask[codes.rows, codes.cols] = True
        x_hat = (torch.relu(pre) * mask) @ params["W_dec"] + params["b_dec"]
        return ((x - x_hat) ** 2).sum(dim=1).mean()
