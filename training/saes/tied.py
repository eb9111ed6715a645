"""The study's SAE with tied weights: the encoder is the transpose of the unit-norm decoder.

Same loss and resampling as ``relu``; only ``W_dec`` (shared), ``b_enc`` and ``b_dec`` are trained.
"""

from __future__ import annotations

import torch

from training.saes.base import SAEConfig
from training.saes.relu import ReluSAE


class TiedSAE(ReluSAE):
    arch = "tied"
    encoder_param = "W_dec"

    def __init__(self, config: SAEConfig) -> None:
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
