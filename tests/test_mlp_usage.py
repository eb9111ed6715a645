"""MLP usage: neurons whose input weights weight decay removed are counted out, and what the layer spans."""

from __future__ import annotations

import pytest
import torch

from training.analysis.mlp_usage import lm_mlp_usage, mlp_usage
from training.lm.tinylm import TinyLM, TinyLMConfig

CONFIG = TinyLMConfig(vocab_size=64, d_model=8, n_layers=2, d_mlp=32, n_heads=2, context=16)


@pytest.fixture
def model_and_windows() -> tuple[TinyLM, torch.Tensor]:
    torch.manual_seed(0)
    model = TinyLM(CONFIG).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("mlp.fc_in.weight"):
                param.normal_(0, 1.0)  # every neuron's pre-activation clearly varies
    windows = torch.randint(0, CONFIG.vocab_size, (64, CONFIG.context + 1))
    return model, windows


def test_a_neuron_with_no_input_weights_is_not_live_and_adds_no_dimension(model_and_windows) -> None:
    model, windows = model_and_windows
    full = mlp_usage(model, windows, 1)
    assert full.neurons == 32 and full.live_neurons == 32 and full.tokens == 64 * CONFIG.context
    with torch.no_grad():
        model.blocks[1].mlp.fc_in.weight[:20] = 0.0  # what weight decay leaves of unused neurons
    pruned = mlp_usage(model, windows, 1)
    assert pruned.live_neurons == 12
    # The 20 switched-off neurons give constants: the hidden state spans at most the 12 live ones.
    assert pruned.dims_99 <= 12 < full.dims_99


def test_outside_residual_width_measures_the_gelu_bend(model_and_windows) -> None:
    model, windows = model_and_windows
    bent = mlp_usage(model, windows, 0).outside_residual_width
    with torch.no_grad():
        model.blocks[0].mlp.fc_in.weight.mul_(1e-3)  # tiny pre-activations: GELU is linear there
    straight = mlp_usage(model, windows, 0).outside_residual_width
    assert straight < 1e-3 < bent
    assert 0.0 <= straight <= 1.0 and 0.0 <= bent <= 1.0


def test_ablation_cost_is_zero_for_a_layer_whose_output_is_switched_off(model_and_windows) -> None:
    model, windows = model_and_windows
    with torch.no_grad():
        model.blocks[0].mlp.fc_out.weight.zero_()
    usage = lm_mlp_usage(model, windows)
    assert [u.layer for u in usage] == [0, 1]
    assert usage[0].ablation_loss == pytest.approx(0.0, abs=1e-6)
    assert abs(usage[1].ablation_loss) > 1e-4
    assert set(usage[0].numbers()) == {
        "layer",
        "neurons",
        "live_neurons",
        "live_std",
        "dims_99",
        "outside_residual_width",
        "ablation_loss",
        "tokens",
    }
