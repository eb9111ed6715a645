"""How much of an MLP layer a TinyLM actually uses, before any SAE is trained on it.

A sparse dictionary can only find what the layer computes. Decoupled weight decay can shrink the input
weights of neurons the model does not need to nothing: such a neuron's pre-activation is a constant, its
post-GELU output too, and the layer's hidden state lies near a space as wide as its live neurons, not its
width. These numbers say how many neurons vary, how many directions the hidden state spans, how much of it
is more than a linear image of the residual stream, and what the next-token loss loses without the layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from training.activations.harvest import module_activations, site_module
from training.lm.tinylm import TinyLM, next_token_loss

# A neuron is live when its pre-activation's standard deviation over tokens reaches this. The residual stream
# is layer-normalised before the MLP, so a weight row of norm w gives a spread of about w. GELU bends over a
# range of about 1; GPT-2's init (std 0.02) starts a 16-wide model's neurons near 0.08, and the neurons training
# never recruits stay at or below that (weight decay shrinks them further), well apart from the used ones.
LIVE_STD = 0.1
VARIANCE_SHARE = 0.99


@dataclass(frozen=True)
class MLPUsage:
    """What one MLP layer of a TinyLM does on a sample of tokens."""

    layer: int
    neurons: int
    live_neurons: int  # pre-activation std over tokens >= live_std
    live_std: float
    dims_99: int  # principal components that hold 99% of the post-GELU variance
    outside_residual_width: float  # share of that variance outside the top d_model components
    ablation_loss: float  # rise of the next-token loss (nats) with the hidden state replaced by its mean
    tokens: int

    def numbers(self) -> dict:
        """The record as plain JSON values."""
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _variance_spectrum(hidden: torch.Tensor) -> np.ndarray:
    centred = hidden.double() - hidden.double().mean(0)
    eigenvalues = torch.linalg.eigvalsh(centred.T @ centred / centred.shape[0]).flip(0).clamp_min(0)
    return (eigenvalues / eigenvalues.sum().clamp_min(1e-30)).cpu().numpy()


def mlp_usage(model: TinyLM, windows: torch.Tensor, layer: int) -> MLPUsage:
    """Live neurons, spanned dimension and mean-ablation cost of block ``layer``'s MLP on ``windows``.

    ``windows`` holds token ids, n x (seq + 1) as ``eval_windows`` cuts them: the layer is read on
    ``windows[:, :-1]`` and the loss predicts ``windows[:, 1:]``.
    """
    model = model.eval()
    inputs = windows[:, :-1]
    pre = module_activations(model, site_module(layer, "mlp_pre"), inputs).flatten(0, -2)
    hidden = module_activations(model, site_module(layer, "mlp_post"), inputs).flatten(0, -2)
    spread = pre.double().std(0)
    shares = np.cumsum(_variance_spectrum(hidden))
    width = model.config.d_model
    mean = hidden.mean(0)
    with torch.no_grad():
        base = next_token_loss(model, windows).item()
        ablated = next_token_loss(model, windows, layer, lambda h: mean.expand_as(h)).item()
    return MLPUsage(
        layer=layer,
        neurons=hidden.shape[1],
        live_neurons=int((spread >= LIVE_STD).sum().item()),
        live_std=LIVE_STD,
        dims_99=int(np.searchsorted(shares, VARIANCE_SHARE - 1e-12) + 1),
        outside_residual_width=float(max(0.0, 1.0 - shares[min(width, len(shares)) - 1])),
        ablation_loss=ablated - base,
        tokens=int(pre.shape[0]),
    )


def lm_mlp_usage(model: TinyLM, windows: torch.Tensor) -> list[MLPUsage]:
    """``mlp_usage`` of every block, so the SAEs' layer can be read beside the others."""
    return [mlp_usage(model, windows, layer) for layer in range(model.config.n_layers)]


def usage_summary(usage: dict) -> str:
    """One sentence on a layer's ``MLPUsage.numbers()``, warning when fewer than half of its neurons are live."""
    text = (
        f"layer {usage['layer']}'s MLP: {usage['live_neurons']} of {usage['neurons']} neurons live, 99% of its "
        f"variance in {usage['dims_99']} dimensions, {usage['outside_residual_width']:.1%} outside the "
        f"residual width; mean-ablating it costs {usage['ablation_loss']:.3f} nats/token"
    )
    if usage["live_neurons"] * 2 < usage["neurons"]:
        text += " (fewer than half live: its SAEs learn a signal about as narrow as the live neurons)"
    return text
