"""The study's minuscule language model, its training, and its losses with the MLP hidden state edited.

``TinyLM`` is a GPT-style decoder: learned token and position embeddings, pre-LayerNorm blocks of causal
self-attention and a GELU MLP, a final LayerNorm and an untied unembedding. The post-GELU MLP hidden
state of block ``i`` is the output of the submodule ``blocks.i.mlp.act`` (forward hooks work there) and
can be replaced in a forward pass with ``forward(tokens, edit_layer=i, replace_mlp_hidden=fn)``.

``train_lm`` writes into its folder ``config.json``, ``train_config.json`` and ``data.json`` (what is
trained, how, and on which tokens), ``train_log.jsonl``, ``checkpoint/`` (resumable state), and when
done ``model.safetensors`` and ``lm_metrics.json`` (validation loss beside unigram and bigram
baselines). Batches are a pure function of ``(seed, step)``, so a resumed run ends with the same
weights as one never interrupted.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from training.lm.causal_attention import causal_attention
from training.lm.fused_loss import linear_cross_entropy
from training.runtime.threads import watch_cores

HiddenEdit = Callable[[torch.Tensor], torch.Tensor]


class TinyLMConfig(BaseModel):
    """Shape of the tiny LM; the defaults are the study's."""

    vocab_size: int = Field(..., gt=0, description="number of token ids")
    d_model: int = Field(16, gt=0, description="width of the residual stream")
    n_layers: int = Field(6, gt=0, description="number of transformer blocks")
    d_mlp: int = Field(64, gt=0, description="width of each MLP's hidden layer")
    n_heads: int = Field(4, gt=0, description="attention heads per block (must divide d_model)")
    context: int = Field(128, gt=1, description="longest sequence the model reads (learned positions)")
    layer_norm_eps: float = Field(1e-5, gt=0, description="epsilon of every LayerNorm")


def config_hash(config: TinyLMConfig) -> str:
    """A short stable hash of a model config, to tie artifacts to the model that made them."""
    return hashlib.sha256(json.dumps(config.model_dump(), sort_keys=True).encode()).hexdigest()[:16]


class Attention(nn.Module):
    """Causal multi-head self-attention."""

    def __init__(self, config: TinyLMConfig) -> None:
        super().__init__()
        if config.d_model % config.n_heads:
            raise ValueError(f"n_heads {config.n_heads} does not divide d_model {config.d_model}")
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attention output (batch x seq x d_model), each position attending to itself and earlier ones."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        y = causal_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    """Linear, GELU (the submodule ``act``, whose output is the hidden state SAEs study), Linear."""

    def __init__(self, config: TinyLMConfig) -> None:
        super().__init__()
        self.fc_in = nn.Linear(config.d_model, config.d_mlp)
        self.act = nn.GELU()
        self.fc_out = nn.Linear(config.d_mlp, config.d_model)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The post-GELU hidden state (same leading shape as x, last dim d_mlp)."""
        return self.act(self.fc_in(x))

    def forward(self, x: torch.Tensor, edit: HiddenEdit | None = None) -> torch.Tensor:
        """MLP output, with the hidden state h replaced by ``edit(h)`` when given."""
        h = self.hidden(x)
        return self.fc_out(h if edit is None else edit(h))


class Block(nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, config: TinyLMConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.attn = Attention(config)
        self.ln2 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, edit: HiddenEdit | None = None) -> torch.Tensor:
        """The residual stream after this block; ``edit`` is passed to the MLP."""
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x), edit)


class TinyLM(nn.Module):
    """A GPT-style decoder whose MLP hidden state can be read and replaced at any layer."""

    def __init__(self, config: TinyLMConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.pos = nn.Embedding(config.context, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.unembed = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                std = (
                    0.02 / math.sqrt(2 * self.config.n_layers)
                    if name.endswith(("out.weight", "fc_out.weight"))
                    else 0.02
                )
                nn.init.normal_(p, std=std)

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] > self.config.context:
            raise ValueError(f"sequence of {tokens.shape[1]} tokens exceeds the context of {self.config.context}")
        return self.embed(tokens) + self.pos(torch.arange(tokens.shape[1], device=tokens.device))

    def forward(
        self, tokens: torch.Tensor, edit_layer: int | None = None, replace_mlp_hidden: HiddenEdit | None = None
    ) -> torch.Tensor:
        """Logits (batch x seq x vocab); at ``edit_layer`` the MLP hidden state h becomes ``replace_mlp_hidden(h)``."""
        return self.unembed(self.final_hidden(tokens, edit_layer, replace_mlp_hidden))

    def final_hidden(
        self, tokens: torch.Tensor, edit_layer: int | None = None, replace_mlp_hidden: HiddenEdit | None = None
    ) -> torch.Tensor:
        """The normalised residual stream the unembedding reads (batch x seq x d_model)."""
        x = self._embed(tokens)
        for i, block in enumerate(self.blocks):
            x = block(x, replace_mlp_hidden if i == edit_layer else None)
        return self.ln_f(x)

    def mlp_hidden(self, tokens: torch.Tensor, layer: int) -> torch.Tensor:
        """Post-GELU MLP hidden state of ``layer`` (batch x seq x d_mlp), running no later block."""
        x = self._embed(tokens)
        for block in self.blocks[:layer]:
            x = block(x)
        block = self.blocks[layer]
        x = x + block.attn(block.ln1(x))
        return block.mlp.hidden(block.ln2(x))


def next_token_loss(
    model: TinyLM,
    windows: torch.Tensor,
    edit_layer: int | None = None,
    replace_mlp_hidden: HiddenEdit | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy of predicting windows[:, 1:] from windows[:, :-1] (windows: n x (seq + 1) token ids).

    For a TinyLM the unembedding and the loss are fused (``linear_cross_entropy``), so the logits are never
    materialised; a wrapped model (DistributedDataParallel) goes through its own forward.
    """
    targets = windows[:, 1:].flatten()
    if not isinstance(model, TinyLM):
        logits = model(windows[:, :-1], edit_layer, replace_mlp_hidden)
        return F.cross_entropy(logits.flatten(0, 1), targets, reduction=reduction)
    hidden = model.final_hidden(windows[:, :-1], edit_layer, replace_mlp_hidden)
    return linear_cross_entropy(hidden.flatten(0, 1), model.unembed.weight, targets, reduction)


def save_lm(model: TinyLM, directory: Path) -> None:
    """Weights to ``model.safetensors`` and the config to ``config.json`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(model.config.model_dump_json(indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))


def load_lm(directory: Path) -> TinyLM:
    """The model saved by ``save_lm`` (or ``train_lm``) in ``directory``, in eval mode."""
    config = TinyLMConfig.model_validate_json((Path(directory) / "config.json").read_text())
    model = TinyLM(config)
    model.load_state_dict(load_file(str(Path(directory) / "model.safetensors")))
    return model.eval()


def fan_in_init(model: TinyLM) -> None:
    """Redraw each block's weight matrices with std 1/sqrt(fan-in) (output projections / sqrt(2 n_layers)).

    The scale no longer depends on a width-768 habit: every MLP neuron of a 16-wide model starts with a
    pre-activation spread near 1, in GELU's bend, rather than about 0.08, where it is nearly linear.
    """
    depth_scale = math.sqrt(2 * model.config.n_layers)
    with torch.no_grad():
        for name, module in model.blocks.named_modules():
            if isinstance(module, nn.Linear):
                std = module.in_features**-0.5
                if name.endswith(("out", "fc_out")):
                    std /= depth_scale
                module.weight.normal_(0.0, std)


def initial_lm(config: TinyLMConfig, train: TrainLMConfig) -> TinyLM:
    """The untrained model of ``train.seed`` with ``train.init``'s weights, the same on every process."""
    torch.manual_seed(train.seed)
    model = TinyLM(config)
    if train.init == "fan_in":
        fan_in_init(model)
    return model


class TrainLMConfig(BaseModel):
    """How the tiny LM is trained."""

    steps: int = Field(1500, gt=0, description="optimiser steps (the default is about 10 minutes on one CPU core)")
    batch_size: int = Field(32, gt=0, description="sequences per step, each of the model's context length")
    lr: float = Field(1e-2, gt=0, description="peak learning rate")
    warmup: int = Field(50, ge=0, description="steps of linear warm-up")
    min_lr_fraction: float = Field(0.1, ge=0, le=1, description="the cosine decays to this fraction of lr")
    weight_decay: float = Field(0.1, ge=0, description="AdamW decoupled weight decay of weight matrices")
    betas: tuple[float, float] = Field((0.9, 0.99), description="AdamW betas")
    grad_clip: float = Field(1.0, gt=0, description="clip the gradient norm to this")
    seed: int = Field(0, description="seed of the initialisation and of every batch")
    init: Literal["gpt2", "fan_in"] = Field(
        "gpt2",
        description="gpt2: every matrix drawn with std 0.02 (GPT-2's, set for 768-wide models; at width 16 an MLP "
        "neuron then starts with a pre-activation spread of about 0.08, where GELU is nearly linear); fan_in: the "
        "blocks' matrices drawn with std 1/sqrt(fan-in), the output projections also divided by sqrt(2 n_layers)",
    )
    log_every: int = Field(50, gt=0, description="steps between lines of train_log.jsonl")
    eval_every: int = Field(250, gt=0, description="steps between validation estimates in the log")
    eval_sequences: int = Field(128, gt=0, description="validation sequences of each estimate in the log")
    checkpoint_every: int = Field(250, gt=0, description="steps between checkpoints")
    patience: int | None = Field(
        None,
        gt=0,
        description="early stopping: end training when the validation loss has not improved for this many "
        "evaluations (every eval_every steps), and keep the model of the best one; None trains all steps",
    )


@dataclass
class LMMetrics:
    """Validation loss (nats/token) of the trained LM beside n-gram baselines on the same targets."""

    val_loss: float
    unigram_loss: float
    bigram_loss: float
    bigram_k: float
    gain_over_unigram: float
    gain_over_bigram: float
    val_targets: int
    train_tokens: int
    steps: int
    tokens_seen: int
    train_seconds: float
    tokens_per_s: float
    n_params: int
    best_step: int | None = None  # with early stopping: the step whose model was kept


@dataclass
class TrainedLM:
    """A trained model with its metrics (None when training was stopped early)."""

    model: TinyLM
    metrics: LMMetrics | None


def lr_at(step: int, config: TrainLMConfig) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_lr_fraction`` of the peak."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(config.steps - config.warmup, 1)
    floor = config.min_lr_fraction
    return config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def sample_batch(tokens: np.ndarray, step: int, batch_size: int, length: int, seed: int) -> torch.Tensor:
    """``batch_size`` random windows of ``length`` tokens (int64), a pure function of ``(seed, step)``."""
    if len(tokens) < length:
        raise ValueError(f"{len(tokens)} tokens are fewer than one sequence of {length}")
    gen = torch.Generator().manual_seed((seed * 1_000_003 + step * 7919 + 17) % (2**63 - 1))
    starts = torch.randint(0, len(tokens) - length + 1, (batch_size,), generator=gen).numpy()
    return torch.from_numpy(np.asarray(tokens[starts[:, None] + np.arange(length)], dtype=np.int64))


def eval_windows(tokens: np.ndarray, context: int, max_windows: int | None = None) -> torch.Tensor:
    """Consecutive windows of ``context + 1`` tokens overlapping by one, so every target is predicted once.

    Window w is tokens[w * context : (w + 1) * context + 1]; a ragged tail is left out.
    """
    n = (len(tokens) - 1) // context
    if max_windows is not None:
        n = min(n, max_windows)
    index = np.arange(n)[:, None] * context + np.arange(context + 1)
    return torch.from_numpy(np.asarray(tokens[index], dtype=np.int64))


@torch.no_grad()
def mean_loss(
    model: TinyLM,
    windows: torch.Tensor,
    edit_layer: int | None = None,
    replace_mlp_hidden: HiddenEdit | None = None,
    batch_size: int = 64,
) -> float:
    """Mean next-token loss over all predicted positions of ``windows`` (n x (seq + 1)), hidden state edited."""
    model.eval()
    total, count = 0.0, 0
    for begin in range(0, len(windows), batch_size):
        batch = windows[begin : begin + batch_size].to(next(model.parameters()).device)
        total += next_token_loss(model, batch, edit_layer, replace_mlp_hidden, reduction="sum").item()
        count += batch[:, 1:].numel()
    return total / max(count, 1)


@dataclass
class SpliceLosses:
    """Next-token loss with a layer's MLP hidden state clean, replaced by a reconstruction, and zeroed."""

    clean: float
    spliced: float
    zero_ablated: float
    recovered: float  # (zero_ablated - spliced) / (zero_ablated - clean)


def splice_losses(
    model: TinyLM,
    tokens: torch.Tensor | np.ndarray,
    layer: int,
    reconstruct: HiddenEdit,
    batch_size: int = 64,
    baselines: tuple[float, float] | None = None,
) -> SpliceLosses:
    """Next-token losses clean, with layer ``layer``'s MLP hidden state replaced by ``reconstruct``, and zeroed.

    ``tokens`` is either windows (n x (seq + 1) token ids) or a 1-D token stream, cut by ``eval_windows``.
    ``reconstruct`` receives the hidden state as rows (n_positions x d_mlp), as an SAE takes it, and
    returns rows of the same shape; e.g. ``sae.reconstruct``. ``baselines`` (clean, zero-ablated) from an
    earlier call on the same model, tokens and layer skips recomputing them when many SAEs are compared.
    """
    windows = eval_windows(tokens, model.config.context) if tokens.ndim == 1 else torch.as_tensor(tokens)

    def splice(hidden: torch.Tensor) -> torch.Tensor:
        return reconstruct(hidden.reshape(-1, hidden.shape[-1])).reshape(hidden.shape)

    if baselines is None:
        clean = mean_loss(model, windows, batch_size=batch_size)
        zero = mean_loss(model, windows, layer, torch.zeros_like, batch_size)
    else:
        clean, zero = baselines
    spliced = mean_loss(model, windows, layer, splice, batch_size)
    gap = zero - clean
    recovered = (zero - spliced) / gap if abs(gap) > 1e-12 else float("nan")
    return SpliceLosses(clean=clean, spliced=spliced, zero_ablated=zero, recovered=recovered)


def _unigram_counts(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    return np.bincount(np.asarray(tokens, dtype=np.int64), minlength=vocab_size).astype(np.float64)


def unigram_loss(train_tokens: np.ndarray, targets: np.ndarray, vocab_size: int, k: float = 1.0) -> float:
    """Mean loss of the add-``k`` unigram model fitted on ``train_tokens`` over ``targets``."""
    counts = _unigram_counts(train_tokens, vocab_size)
    log_p = np.log(counts + k) - np.log(counts.sum() + k * vocab_size)
    return float(-log_p[np.asarray(targets, dtype=np.int64)].mean())


def bigram_loss(train_tokens: np.ndarray, val_tokens: np.ndarray, vocab_size: int, k: float) -> float:
    """Mean loss of the add-``k`` bigram model fitted on ``train_tokens`` over val_tokens[1:] given the previous."""
    train = np.asarray(train_tokens, dtype=np.int64)
    val = np.asarray(val_tokens, dtype=np.int64)
    pairs, pair_counts = np.unique(train[:-1] * vocab_size + train[1:], return_counts=True)
    context_counts = np.bincount(train[:-1], minlength=vocab_size).astype(np.float64)
    query = val[:-1] * vocab_size + val[1:]
    where = np.clip(np.searchsorted(pairs, query), 0, max(len(pairs) - 1, 0))
    seen = pairs[where] == query if len(pairs) else np.zeros(len(query), dtype=bool)
    c = np.where(seen, pair_counts[where] if len(pairs) else 0, 0).astype(np.float64)
    log_p = np.log(c + k) - np.log(context_counts[val[:-1]] + k * vocab_size)
    return float(-log_p.mean())


def fit_bigram_k(
    train_tokens: np.ndarray, vocab_size: int, grid: tuple[float, ...] = (1.0, 0.3, 0.1, 0.03, 0.01)
) -> float:
    """The add-k constant with the lowest loss on the last 5% of the training tokens, fitted on the rest."""
    cut = int(len(train_tokens) * 0.95)
    fit, held = train_tokens[:cut], train_tokens[cut:]
    return min(grid, key=lambda k: bigram_loss(fit, held, vocab_size, k))


def evaluate_lm(
    model: TinyLM,
    train_tokens: np.ndarray,
    val_tokens: np.ndarray,
    steps: int = 0,
    tokens_seen: int = 0,
    train_seconds: float = 0.0,
) -> LMMetrics:
    """Validation loss of ``model`` beside unigram (add-one) and bigram (add-k, k fitted on train) baselines.

    All three are scored on the same targets: every token of ``eval_windows(val_tokens, context)`` but the first.
    """
    context, vocab = model.config.context, model.config.vocab_size
    windows = eval_windows(val_tokens, context)
    n_targets = windows.shape[0] * context
    targets = np.asarray(val_tokens[: n_targets + 1])
    k = fit_bigram_k(np.asarray(train_tokens), vocab)
    val_loss = mean_loss(model, windows)
    unigram = unigram_loss(train_tokens, targets[1:], vocab)
    bigram = bigram_loss(train_tokens, targets, vocab, k)
    return LMMetrics(
        val_loss=val_loss,
        unigram_loss=unigram,
        bigram_loss=bigram,
        bigram_k=k,
        gain_over_unigram=unigram - val_loss,
        gain_over_bigram=bigram - val_loss,
        val_targets=n_targets,
        train_tokens=len(train_tokens),
        steps=steps,
        tokens_seen=tokens_seen,
        train_seconds=train_seconds,
        tokens_per_s=tokens_seen / train_seconds if train_seconds > 0 else 0.0,
        n_params=sum(p.numel() for p in model.parameters()),
    )


def write_lm_checkpoint(
    folder: Path, step: int, model: TinyLM, optimizer: torch.optim.Optimizer, seconds: float
) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    state = optimizer.state_dict()
    tensors = {f"{i}.{name}": t for i, s in state["state"].items() for name, t in s.items()}
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(
        json.dumps({"step": step, "seconds": seconds, "param_groups": state["param_groups"]})
    )
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def read_lm_checkpoint(folder: Path, model: TinyLM, optimizer: torch.optim.Optimizer) -> tuple[int, float]:
    meta = json.loads((folder / "state.json").read_text())
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in load_file(str(folder / "optimizer.safetensors")).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = tensor
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta["step"], meta["seconds"]


def truncate_log(path: Path, last_step: int) -> None:
    if path.exists():
        keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
        path.write_text("".join(line + "\n" for line in keep))


BEST_WEIGHTS = "best_model.safetensors"
BEST_RECORD = "best.json"


def _read_best(out_dir: Path) -> dict:
    """Early stopping's record (best validation loss, its step, evaluations since) kept in the LM's folder."""
    path = out_dir / BEST_RECORD
    return json.loads(path.read_text()) if path.exists() else {"val_loss": math.inf, "step": 0, "stale": 0}


def _track_best(out_dir: Path, model: TinyLM, val_loss: float, step: int, best: dict, patience: int) -> bool:
    """Keep the best model so far (in ``best`` and on disk); True once ``patience`` evaluations brought no gain."""
    if val_loss < best["val_loss"]:
        best.update(val_loss=val_loss, step=step, stale=0)
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(out_dir / BEST_WEIGHTS))
    else:
        best["stale"] += 1
    (out_dir / BEST_RECORD).write_text(json.dumps(best))
    return best["stale"] >= patience


def lm_optimizer(model: TinyLM, config: TrainLMConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, foreach=True)


def token_fingerprint(tokens: np.ndarray) -> str:
    """A short hash of a token stream, to tie a trained model to its data."""
    return hashlib.sha256(np.ascontiguousarray(tokens).tobytes()).hexdigest()[:16]


def lm_data_record(train_tokens: np.ndarray, val_tokens: np.ndarray) -> dict:
    return {
        "train_tokens": len(train_tokens),
        "train_fingerprint": token_fingerprint(train_tokens),
        "val_tokens": len(val_tokens),
        "val_fingerprint": token_fingerprint(val_tokens),
    }


def same_lm_settings(out_dir: Path, config: TinyLMConfig, train: TrainLMConfig, data: dict) -> bool:
    paths = out_dir / "config.json", out_dir / "train_config.json", out_dir / "data.json"
    if not all(p.exists() for p in paths):
        return False
    return (
        TinyLMConfig.model_validate_json(paths[0].read_text()) == config
        and TrainLMConfig.model_validate_json(paths[1].read_text()) == train
        and json.loads(paths[2].read_text()) == data
    )


def train_lm(
    config: TinyLMConfig,
    train_tokens: np.ndarray,
    val_tokens: np.ndarray,
    out_dir: Path,
    train: TrainLMConfig | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    device: torch.device | str = "cpu",
) -> TrainedLM:
    """Train a TinyLM on ``train_tokens`` and evaluate it on ``val_tokens``; resume or reuse ``out_dir``.

    A folder that already holds a finished model with the same settings is loaded, not retrained.
    ``stop_after`` ends training early at that step, after a checkpoint (used to test resumption).
    Training runs on ``device``; the returned model and the final evaluation are on the CPU.
    """
    train = train or TrainLMConfig()
    out_dir = Path(out_dir)
    metrics_path = out_dir / "lm_metrics.json"
    data = lm_data_record(train_tokens, val_tokens)
    same = same_lm_settings(out_dir, config, train, data)
    if same and metrics_path.exists() and (out_dir / "model.safetensors").exists():
        return TrainedLM(load_lm(out_dir), LMMetrics(**json.loads(metrics_path.read_text())))
    if not same and out_dir.exists():
        shutil.rmtree(out_dir / "checkpoint", ignore_errors=True)
        metrics_path.unlink(missing_ok=True)
        (out_dir / BEST_WEIGHTS).unlink(missing_ok=True)
        (out_dir / BEST_RECORD).unlink(missing_ok=True)
        (out_dir / "model.safetensors").unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(config.model_dump_json(indent=2))
    (out_dir / "train_config.json").write_text(train.model_dump_json(indent=2))
    (out_dir / "data.json").write_text(json.dumps(data, indent=2))

    model = initial_lm(config, train).to(device)
    optimizer = lm_optimizer(model, train)
    checkpoint = out_dir / "checkpoint"
    log_path = out_dir / "train_log.jsonl"
    start, seconds = 0, 0.0
    if (checkpoint / "state.json").exists():
        start, seconds = read_lm_checkpoint(checkpoint, model, optimizer)
        truncate_log(log_path, start)
    else:
        log_path.unlink(missing_ok=True)
    val_probe = eval_windows(val_tokens, config.context, train.eval_sequences)
    best = _read_best(out_dir) if start else {"val_loss": math.inf, "step": 0, "stale": 0}
    last = start
    stopped_early = False
    seq_tokens = train.batch_size * config.context
    end = train.steps if stop_after is None else min(stop_after, train.steps)
    bar = tqdm(range(start, end), initial=start, total=train.steps, disable=not progress, desc="lm", unit="step")
    cores = watch_cores("lm", device, bar.write if progress else None)
    with log_path.open("a") as log:
        for step in bar:
            began = time.perf_counter()
            model.train()
            batch = sample_batch(train_tokens, step, train.batch_size, config.context + 1, train.seed).to(device)
            lr = lr_at(step, train)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = next_token_loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
            optimizer.step()
            elapsed = time.perf_counter() - began
            seconds += elapsed
            done = last = step + 1
            if done % train.log_every == 0 or done == train.steps:
                line = {
                    "step": done,
                    "tokens": done * seq_tokens,
                    "loss": loss.item(),
                    "lr": lr,
                    "tokens_per_s": seq_tokens / max(elapsed, 1e-9),
                }
                if done % train.eval_every == 0 or done == train.steps:
                    line["val_loss"] = mean_loss(model, val_probe)
                    if train.patience is not None:
                        stopped_early = _track_best(out_dir, model, line["val_loss"], done, best, train.patience)
                log.write(json.dumps(line) + "\n")
                log.flush()
            cores.after_step()
            bar.set_postfix_str(f"loss {loss.item():.3f} {seq_tokens / max(elapsed, 1e-9):,.0f} tok/s", refresh=False)
            if done % train.checkpoint_every == 0 or done == end or stopped_early:
                write_lm_checkpoint(checkpoint, done, model, optimizer, seconds)
            if stopped_early:
                break
    bar.close()
    cores.close()
    model = model.cpu().eval()
    if end < train.steps and not stopped_early:
        return TrainedLM(model, None)
    if train.patience is not None and best["step"]:
        model.load_state_dict(load_file(str(out_dir / BEST_WEIGHTS)))
    save_lm(model, out_dir)
    metrics = evaluate_lm(model, train_tokens, val_tokens, last, last * seq_tokens, seconds)
    if train.patience is not None:
        metrics.best_step = best["step"]
    metrics_path.write_text(json.dumps(asdict(metrics), indent=2))
    return TrainedLM(model, metrics)
