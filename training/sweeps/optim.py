"""Adam over named tensors with hand-computed gradients, plus the learning-rate schedule."""

from __future__ import annotations

import math

import torch

# Parameters whose first dimension indexes latents: their optimiser state is reset per latent.
LATENT_ROWS = ("W_enc", "W_dec", "b_enc", "log_threshold")


class Adam:
    """Adam (Kingma and Ba) whose per-latent state can be reset when a latent is resampled."""

    def __init__(self, params: dict[str, torch.Tensor], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.betas = betas
        self.eps = eps
        self.t = 0
        self.m = {name: torch.zeros_like(p) for name, p in params.items()}
        self.v = {name: torch.zeros_like(p) for name, p in params.items()}

    def step(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], lr: float) -> None:
        b1, b2 = self.betas
        self.t += 1
        step_size = lr / (1 - b1**self.t)
        root_bc2 = math.sqrt(1 - b2**self.t)
        for name, p in params.items():
            g, m, v = grads[name], self.m[name], self.v[name]
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, v.sqrt().div_(root_bc2).add_(self.eps), value=-step_size)

    def reset_latents(self, rows: torch.Tensor) -> None:
        for name in LATENT_ROWS:
            if name in self.m:
                self.m[name][rows] = 0.0
                self.v[name][rows] = 0.0

    def state(self) -> dict[str, torch.Tensor]:
        out = {f"adam.m.{k}": v for k, v in self.m.items()}
        out.update({f"adam.v.{k}": v for k, v in self.v.items()})
        out["adam.t"] = torch.tensor(self.t)
        return out

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        for name in self.m:
            self.m[name].copy_(tensors[f"adam.m.{name}"])
            self.v[name].copy_(tensors[f"adam.v.{name}"])
        self.t = int(tensors["adam.t"])


def learning_rate(
    step: int,
    total_steps: int,
    peak: float,
    warmup_fraction: float,
    decay_fraction: float,
    horizon_steps: int | None = None,
) -> float:
    """Linear warm-up, a constant plateau, then linear decay to zero over the last steps.

    The warm-up is a fraction of ``horizon_steps`` (default: this run's steps) and the decay a fraction of
    this run's own steps, so runs of different lengths that share a horizon agree step for step until the
    shorter one starts to cool down: a doubled run can resume from the shorter run's pre-decay state.
    """
    warmup = max(int((horizon_steps or total_steps) * warmup_fraction), 1)
    decay = int(total_steps * decay_fraction)
    factor = min(1.0, (step + 1) / warmup)
    if decay > 0 and step >= total_steps - decay:
        factor = min(factor, (total_steps - step) / decay)
    return peak * factor
