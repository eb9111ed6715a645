"""The LM's fused loss and its CPU attention give PyTorch's own losses and gradients, so training is unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from training.lm.causal_attention import causal_attention
from training.lm.fused_loss import linear_cross_entropy
from training.lm.tinylm import TinyLM, TinyLMConfig, next_token_loss


def _grads(loss: torch.Tensor, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("chunk_rows", [1, 7, 256, 10_000])
def test_fused_cross_entropy_matches_logits_then_cross_entropy(reduction: str, chunk_rows: int) -> None:
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(300, 16, generator=generator, requires_grad=True)
    weight = (torch.randn(500, 16, generator=generator) * 0.5).requires_grad_()
    targets = torch.randint(0, 500, (300,), generator=generator)
    expected = F.cross_entropy(hidden @ weight.t(), targets, reduction=reduction)
    fused = linear_cross_entropy(hidden, weight, targets, reduction, chunk_rows=chunk_rows)
    assert fused.item() == pytest.approx(expected.item(), rel=1e-5)
    for got, want in zip(_grads(fused, (hidden, weight)), _grads(expected, (hidden, weight)), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_fused_cross_entropy_per_row_losses_and_bad_reduction() -> None:
    hidden, weight = torch.randn(40, 8), torch.randn(30, 8)
    targets = torch.randint(0, 30, (40,))
    per_row = linear_cross_entropy(hidden, weight, targets, "none", chunk_rows=16)
    torch.testing.assert_close(per_row, F.cross_entropy(hidden @ weight.t(), targets, reduction="none"))
    with pytest.raises(ValueError, match="reduction"):
        linear_cross_entropy(hidden, weight, targets, "max")


def test_fused_cross_entropy_survives_huge_logits() -> None:
    hidden = torch.tensor([[1000.0, 0.0], [0.0, -1000.0]], requires_grad=True)
    weight = torch.eye(2)
    loss = linear_cross_entropy(hidden, weight, torch.tensor([1, 0]))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(500.0, rel=1e-4)
    loss.backward()
    assert torch.isfinite(hidden.grad).all()


@pytest.mark.parametrize("shape", [(2, 4, 128, 4), (3, 2, 17, 8), (1, 1, 1, 4)])
def test_cpu_causal_attention_matches_the_flash_kernel(shape: tuple[int, int, int, int]) -> None:
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(*shape, generator=generator, requires_grad=True) for _ in range(3))
    weights = torch.randn(*shape, generator=generator)
    ours = causal_attention(q, k, v)
    theirs = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    got = _grads((ours * weights).sum(), (q, k, v))
    want = _grads((theirs * weights).sum(), (q, k, v))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_lm_loss_and_gradients_equal_the_unfused_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The training step's loss is the textbook cross-entropy of the model's logits, gradients included."""
    torch.manual_seed(0)
    model = TinyLM(TinyLMConfig(vocab_size=97, context=32))
    windows = torch.randint(0, 97, (4, 33))
    fused = next_token_loss(model, windows)
    fused_grads = torch.autograd.grad(fused, list(model.parameters()))
    monkeypatch.setattr(
        "training.lm.tinylm.causal_attention",
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
    )
    plain = F.cross_entropy(model(windows[:, :-1]).flatten(0, 1), windows[:, 1:].flatten())
    assert fused.item() == pytest.approx(plain.item(), rel=1e-5)
    plain_grads = torch.autograd.grad(plain, list(model.parameters()))
    for a, b in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)
    per_token = next_token_loss(model, windows, reduction="none")
    assert per_token.shape == (4 * 32,)
    assert per_token.mean().item() == pytest.approx(fused.item(), rel=1e-5)
