"""TinyLM: its hidden state can be read and replaced, it learns, it resumes exactly, baselines and splicing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from training.lm.tinylm import (
    TinyLM,
    TrainLMConfig,
    bigram_loss,
    eval_windows,
    fan_in_init,
    load_lm,
    lr_at,
    sample_batch,
    splice_losses,
    train_lm,
    unigram_loss,
)

from .text_builders import TINY_VOCAB, tiny_lm, tiny_lm_config, tiny_tokens

QUICK = TrainLMConfig(steps=40, batch_size=8, lr=1e-2, warmup=5, log_every=5, eval_every=20, eval_sequences=8)


def _split() -> tuple[np.ndarray, np.ndarray]:
    tokens = tiny_tokens()
    return tokens[:3500], tokens[3500:]


def test_mlp_hidden_is_the_act_submodule_output() -> None:
    model = tiny_lm()
    tokens = torch.from_numpy(tiny_tokens()[:32].astype(np.int64)).view(2, 16)
    seen: list[torch.Tensor] = []
    handle = model.blocks[2].mlp.act.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        model(tokens)
        hidden = model.mlp_hidden(tokens, 2)
    handle.remove()
    assert hidden.shape == (2, 16, 64)
    torch.testing.assert_close(hidden, seen[0])


def test_replacing_the_hidden_state_changes_only_later_layers() -> None:
    model = tiny_lm()
    tokens = torch.from_numpy(tiny_tokens()[:16].astype(np.int64))[None]
    with torch.no_grad():
        clean = model(tokens)
        same = model(tokens, edit_layer=1, replace_mlp_hidden=lambda h: h)
        doubled = model(tokens, edit_layer=1, replace_mlp_hidden=lambda h: 2 * h)
    assert torch.equal(clean, same)
    assert not torch.allclose(clean, doubled)


def test_batches_are_a_pure_function_of_seed_and_step() -> None:
    tokens = tiny_tokens()
    a = sample_batch(tokens, 7, 4, 17, seed=1)
    assert torch.equal(a, sample_batch(tokens, 7, 4, 17, seed=1))
    assert not torch.equal(a, sample_batch(tokens, 8, 4, 17, seed=1))
    assert a.shape == (4, 17) and a.dtype == torch.int64


def test_schedule_warms_up_then_decays_to_the_floor() -> None:
    config = TrainLMConfig(steps=100, lr=1.0, warmup=10, min_lr_fraction=0.1)
    assert lr_at(0, config) == pytest.approx(0.1)
    assert lr_at(9, config) == pytest.approx(1.0)
    assert lr_at(99, config) == pytest.approx(0.1, abs=1e-3)
    assert all(lr_at(s, config) >= lr_at(s + 1, config) for s in range(10, 99))


def test_loss_falls_and_metrics_are_written(tmp_path: Path) -> None:
    train, val = _split()
    result = train_lm(tiny_lm_config(), train, val, tmp_path, QUICK, progress=False)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"] - 1.0
    metrics = json.loads((tmp_path / "lm_metrics.json").read_text())
    assert metrics["val_loss"] == pytest.approx(result.metrics.val_loss)
    assert metrics["val_loss"] < metrics["unigram_loss"]
    assert metrics["steps"] == 40 and metrics["tokens_seen"] == 40 * 8 * 16
    loaded = load_lm(tmp_path)
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name])


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    train, val = _split()
    config = QUICK.model_copy(update={"steps": 20, "checkpoint_every": 3})
    whole = train_lm(tiny_lm_config(), train, val, tmp_path / "whole", config, progress=False)
    stopped = train_lm(tiny_lm_config(), train, val, tmp_path / "resumed", config, progress=False, stop_after=7)
    assert stopped.metrics is None
    resumed = train_lm(tiny_lm_config(), train, val, tmp_path / "resumed", config, progress=False)
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    assert resumed.metrics.val_loss == whole.metrics.val_loss
    logs = [(tmp_path / d / "train_log.jsonl").read_text() for d in ("whole", "resumed")]
    steps = [[json.loads(line)["step"] for line in log.splitlines()] for log in logs]
    assert steps[0] == steps[1]


def test_finished_training_is_reused(tmp_path: Path) -> None:
    train, val = _split()
    config = QUICK.model_copy(update={"steps": 5})
    train_lm(tiny_lm_config(), train, val, tmp_path, config, progress=False)
    stamp = (tmp_path / "model.safetensors").stat().st_mtime_ns
    train_lm(tiny_lm_config(), train, val, tmp_path, config, progress=False)
    assert (tmp_path / "model.safetensors").stat().st_mtime_ns == stamp
    train_lm(tiny_lm_config(), train[::-1].copy(), val, tmp_path, config, progress=False)
    assert (tmp_path / "model.safetensors").stat().st_mtime_ns != stamp


def test_ngram_baselines_on_a_known_stream() -> None:
    train = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    val = np.array([0, 1, 0])
    # unigram add-one over a vocabulary of 4: p(0) = p(1) = 5/12
    assert unigram_loss(train, val[1:], 4) == pytest.approx(-math.log(5 / 12))
    # bigram add-k: 0 -> 1 seen 4 times out of 4, 1 -> 0 seen 3 times out of 3
    k = 0.5
    expected = -(math.log((4 + k) / (4 + 4 * k)) + math.log((3 + k) / (3 + 4 * k))) / 2
    assert bigram_loss(train, val, 4, k) == pytest.approx(expected)


def test_eval_windows_predict_every_target_once() -> None:
    tokens = np.arange(50)
    windows = eval_windows(tokens, 16)
    assert windows.shape == (3, 17)
    assert windows[:, 1:].flatten().tolist() == list(range(1, 49))


def test_splice_losses() -> None:
    model = tiny_lm()
    windows = eval_windows(tiny_tokens(), 16, max_windows=8)
    identity = splice_losses(model, windows, 2, lambda h: h)
    assert identity.spliced == identity.clean
    assert identity.zero_ablated != identity.clean
    assert identity.recovered == pytest.approx(1.0)
    shapes: list[tuple[int, ...]] = []

    def noisy_rows(h: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(h.shape))
        return h + 0.5 * torch.randn_like(h)

    noisy = splice_losses(model, windows, 2, noisy_rows)
    assert shapes == [(8 * 16, 64)]
    assert noisy.clean == identity.clean and noisy.zero_ablated == identity.zero_ablated
    assert noisy.spliced != noisy.clean
    stream = splice_losses(model, tiny_tokens()[: 8 * 16 + 1], 2, lambda h: h)
    assert stream.clean == pytest.approx(identity.clean)


def test_model_rejects_overlong_sequences() -> None:
    with pytest.raises(ValueError, match="context"):
        TinyLM(tiny_lm_config(context=8))(torch.zeros(1, 9, dtype=torch.int64))
    assert tiny_lm_config().vocab_size == TINY_VOCAB


def test_splice_losses_reuse_given_baselines() -> None:
    model = tiny_lm()
    windows = eval_windows(tiny_tokens(), 16, max_windows=8)
    full = splice_losses(model, windows, 2, lambda h: 0.5 * h)
    reused = splice_losses(model, windows, 2, lambda h: 0.5 * h, baselines=(full.clean, full.zero_ablated))
    assert reused == full


def test_early_stopping_keeps_the_best_model_and_stops_after_its_patience(tmp_path: Path, monkeypatch) -> None:
    from training.lm import tinylm

    train, val = _split()
    losses = iter([5.0, 4.0, 4.5, 4.6, 4.7, 3.0])
    real = tinylm.mean_loss
    monkeypatch.setattr(tinylm, "mean_loss", lambda model, windows, *a, **k: next(losses))
    config = QUICK.model_copy(update={"steps": 60, "eval_every": 5, "log_every": 5, "patience": 2})
    result = train_lm(tiny_lm_config(), train, val, tmp_path, config, progress=False)
    monkeypatch.setattr(tinylm, "mean_loss", real)
    metrics = json.loads((tmp_path / "lm_metrics.json").read_text())
    # Evaluations at steps 5, 10, 15, 20: the best is step 10, and two evaluations without a gain end it.
    assert metrics["best_step"] == 10 and metrics["steps"] == 20
    best = load_lm(tmp_path)
    kept = tinylm.load_file(str(tmp_path / tinylm.BEST_WEIGHTS))
    for name, tensor in best.state_dict().items():
        assert torch.equal(tensor, kept[name]) and torch.equal(tensor, result.model.state_dict()[name])
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 20


def test_fan_in_init_starts_every_mlp_neuron_in_the_gelu_bend_and_resumes_exactly(tmp_path: Path) -> None:
    config = tiny_lm_config()
    gpt2, fan_in = TinyLM(config), TinyLM(config)
    fan_in_init(fan_in)
    for model, (low, high) in ((gpt2, (0.0, 0.2)), (fan_in, (0.6, 1.5))):
        rows = model.blocks[0].mlp.fc_in.weight.norm(dim=1)
        assert low < rows.median().item() < high
    # Output projections are scaled down for depth; embeddings keep their init.
    assert fan_in.blocks[0].mlp.fc_out.weight.std().item() < fan_in.blocks[0].mlp.fc_in.weight.std().item() / 2
    assert fan_in.embed.weight.std().item() < 0.05

    train, val = _split()
    settings = QUICK.model_copy(update={"steps": 12, "checkpoint_every": 4, "init": "fan_in"})
    whole = train_lm(config, train, val, tmp_path / "whole", settings, progress=False)
    train_lm(config, train, val, tmp_path / "resumed", settings, progress=False, stop_after=5)
    resumed = train_lm(config, train, val, tmp_path / "resumed", settings, progress=False)
    plain = train_lm(
        config, train, val, tmp_path / "gpt2", settings.model_copy(update={"init": "gpt2"}), progress=False
    )
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    assert not torch.equal(whole.model.blocks[0].mlp.fc_in.weight, plain.model.blocks[0].mlp.fc_in.weight)
    assert json.loads((tmp_path / "whole" / "train_config.json").read_text())["init"] == "fan_in"
