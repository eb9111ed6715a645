"""Resampling of dead latents for the L1 family (after Anthropic's "Towards Monosemanticity").

A latent that has not fired for ``dead_after`` samples is pointed at an input the dictionary
currently explains badly: its atom becomes that input's normalised residual, its encoder row the same
direction at a modest scale, its bias zero. Checks happen once every ``dead_after`` samples and only
in the first ``resample_until`` fraction of training or, with ``resample_stop="cooldown"``, until the
learning rate starts to decay, so the cool-down converges undisturbed however long the run.
"""

from __future__ import annotations

import torch

from training.saes.base import SparseAutoencoder, sae_generator


def resample_dead_latents(
    sae: SparseAutoencoder, x: torch.Tensor, step: int, total_steps: int, encoder_gain: float = 0.2
) -> list[torch.Tensor]:
    """Resample dead latents of ``sae`` using batch x; returns the indices whose optimiser state to reset."""
    cfg = sae.config
    b = x.shape[0]
    interval = max(cfg.dead_after // b, 1)
    if cfg.resample_stop == "cooldown":
        over = sae.cooldown_from is not None and step >= sae.cooldown_from
    else:
        over = step + 1 > cfg.resample_until * total_steps
    if not cfg.resample or (step + 1) % interval or over:
        return []
    dead = (sae.samples_since_fired >= cfg.dead_after).nonzero().squeeze(1)
    if dead.numel() == 0:
        return []
    residual = x - sae.reconstruct(x)
    loss = residual.pow(2).sum(dim=1)
    if loss.sum() <= 0:
        return []
    gen = sae_generator(cfg.seed, 2 + step, cfg.dict_size)
    # Drawn on the CPU with the SAE's own generator, so a run on CUDA resamples the same inputs.
    picks = torch.multinomial(loss.pow(2).cpu(), dead.numel(), replacement=True, generator=gen).to(x.device)
    directions = residual[picks]
    directions = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-8)
    alive = sae.samples_since_fired < cfg.dead_after
    enc_norm = sae.W_enc[alive].norm(dim=1).mean().item() if alive.any() else 1.0
    sae.W_dec[dead] = directions
    if "W_enc" in sae.params():
        sae.W_enc[dead] = directions * (encoder_gain * enc_norm)
    sae.b_enc[dead] = 0.0
    sae.samples_since_fired[dead] = 0
    sae.normalise_decoder()
    return [dead]
