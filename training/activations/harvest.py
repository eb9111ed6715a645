"""Activations of one site of an LM for every token of a corpus, on disk, and batches of them for SAEs.

``harvest_activations`` cuts the token stream into consecutive windows of the model's context length
(the last one may be shorter), runs them in chunks and writes the output of the chosen module for every
token to ``activations_<name>.f32``: a float32 array of shape (n_tokens, dim) whose row t belongs to
token t, with ``activations_<name>.json`` (shape, dtype, layer, site, module, model config and weights
hashes) beside it. Memory stays bounded by one chunk. The forward pass stops at the harvested module.

``ActivationSource`` serves deterministic random batches of those rows in the protocol the SAE trainer
reads (``.dim``, ``.batch(step, batch_size)``); the last rows are held out for negative steps.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import nn
from tqdm import tqdm

from training.lm.tinylm import TinyLM, config_hash, token_fingerprint

# Site name -> path of the module below ``blocks.<layer>`` whose output is harvested ("" is the block).
SITES: dict[str, str] = {
    "mlp_post": "mlp.act",
    "mlp_pre": "mlp.fc_in",
    "mlp_out": "mlp.fc_out",
    "resid_post": "",
}


class HarvestConfig(BaseModel):
    """Which activations are harvested and in what chunks."""

    layer: int = Field(2, ge=0, description="index of the transformer block")
    site: str = Field("mlp_post", description=f"one of {sorted(SITES)}; mlp_post is the post-GELU MLP hidden state")
    chunk_contexts: int = Field(64, gt=0, description="context windows per forward pass (bounds memory)")


@dataclass
class ActivationManifest:
    """What an activation file holds and what made it."""

    file: str
    shape: list[int]
    dtype: str
    layer: int | None
    site: str
    module: str
    context: int
    model_config_hash: str
    weights_hash: str
    tokens_fingerprint: str
    mean_sq_norm: float
    seconds: float
    tokens_per_s: float
    model: str = "tinylm"  # name of the model harvested (a transformers model's folder name)


def site_module(layer: int, site: str) -> str:
    """The module name (as in ``model.named_modules()``) of ``site`` in block ``layer`` of a TinyLM."""
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}: choose one of {sorted(SITES)}")
    return ".".join(part for part in ("blocks", str(layer), SITES[site]) if part)


def weights_hash(model: nn.Module) -> str:
    """A short hash of a model's weights, in the order of its state dict."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class _Captured(Exception):
    """Raised by the harvest hook to end the forward pass once the module has run."""


def module_activations(model: nn.Module, module_name: str, tokens: torch.Tensor) -> torch.Tensor:
    """Output of the submodule ``module_name`` (the first element if a tuple) on ``tokens``, stopping there.

    ``model`` is called as ``model(tokens)``; this holds for TinyLM and for transformers models.
    """
    module = model.get_submodule(module_name)
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _Captured

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(tokens)
    except _Captured:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f"module {module_name} did not run in the forward pass")
    return captured[0]


def write_module_rows(
    model: nn.Module,
    module_name: str,
    tokens: np.ndarray,
    path: Path,
    context: int,
    chunk_contexts: int = 64,
    progress: bool = True,
    desc: str = "",
    device: torch.device | str = "cpu",
) -> tuple[int, float]:
    """Write the float32 output rows of ``module_name`` for every token to ``path``; (dim, sum of squared norms).

    Tokens are cut into consecutive windows of ``context`` from the first (the last may be shorter), so
    a slice of the stream that starts on a window boundary gives the same rows as the whole stream. The
    file appears only when complete (written under a temporary name, then renamed).
    """
    tmp_path = Path(path).with_name(Path(path).name + ".tmp")
    model.eval()
    chunk = chunk_contexts * context
    dim = 0
    sq_norm = 0.0
    with tmp_path.open("wb") as out:
        for begin in tqdm(
            range(0, len(tokens), chunk), disable=not progress, desc=f"harvest {desc}", unit="chunk", dynamic_ncols=True
        ):
            piece = torch.from_numpy(np.asarray(tokens[begin : begin + chunk], dtype=np.int64)).to(device)
            full = len(piece) // context * context
            parts = []
            if full:
                acts = module_activations(model, module_name, piece[:full].view(-1, context))
                parts.append(acts.reshape(full, -1))
            if full < len(piece):
                parts.append(module_activations(model, module_name, piece[full:][None])[0])
            rows = torch.cat(parts).float().cpu().numpy()
            dim = rows.shape[1]
            sq_norm += float(np.square(rows, dtype=np.float64).sum())
            out.write(np.ascontiguousarray(rows).tobytes())
    tmp_path.replace(path)
    return dim, sq_norm


def _manifest_path(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / f"activations_{name}.json"


def harvest_module(
    model: nn.Module,
    module_name: str,
    tokens: np.ndarray,
    out_dir: Path,
    name: str,
    context: int,
    chunk_contexts: int = 64,
    identity: dict | None = None,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> ActivationManifest:
    """Harvest the output of ``module_name`` for every token of ``tokens`` into ``out_dir``; see the module doc.

    ``identity`` (layer, site, model_config_hash, model name) goes into the manifest. If ``out_dir``
    already holds a harvest of the same module, model weights and tokens, its manifest is returned without
    running the model.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    identity = {"layer": None, "site": module_name, "model_config_hash": "", "model": "tinylm", **(identity or {})}
    key = (module_name, weights_hash(model), token_fingerprint(tokens), context)
    manifest_path = _manifest_path(out_dir, name)
    if manifest_path.exists():
        old = ActivationManifest(**json.loads(manifest_path.read_text()))
        if (old.module, old.weights_hash, old.tokens_fingerprint, old.context) == key:
            return old
        manifest_path.unlink()
    data_path = out_dir / f"activations_{name}.f32"
    start = time.perf_counter()
    model.to(device)
    try:
        dim, sq_norm = write_module_rows(
            model, module_name, tokens, data_path, context, chunk_contexts, progress, name, device
        )
    finally:
        model.to("cpu")
    seconds = time.perf_counter() - start
    manifest = ActivationManifest(
        file=data_path.name,
        shape=[len(tokens), dim],
        dtype="float32",
        layer=identity["layer"],
        site=identity["site"],
        module=module_name,
        context=context,
        model_config_hash=identity["model_config_hash"],
        weights_hash=key[1],
        tokens_fingerprint=key[2],
        mean_sq_norm=sq_norm / max(len(tokens), 1),
        seconds=seconds,
        tokens_per_s=len(tokens) / max(seconds, 1e-9),
        model=identity["model"],
    )
    manifest_path.write_text(json.dumps(asdict(manifest), indent=2))
    return manifest


def harvest_activations(
    model: TinyLM,
    tokens: np.ndarray,
    out_dir: Path,
    name: str = "train",
    config: HarvestConfig | None = None,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> ActivationManifest:
    """Harvest ``config.site`` of block ``config.layer`` of a TinyLM for every token into ``out_dir``."""
    config = config or HarvestConfig()
    if config.layer >= model.config.n_layers:
        raise ValueError(f"layer {config.layer} does not exist in a model of {model.config.n_layers} layers")
    identity = {"layer": config.layer, "site": config.site, "model_config_hash": config_hash(model.config)}
    return harvest_module(
        model,
        site_module(config.layer, config.site),
        tokens,
        out_dir,
        name,
        model.config.context,
        config.chunk_contexts,
        identity,
        progress,
        device,
    )


def load_activations(out_dir: Path, name: str = "train") -> tuple[np.ndarray, ActivationManifest]:
    """The harvested rows as a read-only memmap (n_tokens x dim) with their manifest."""
    manifest = ActivationManifest(**json.loads(_manifest_path(out_dir, name).read_text()))
    rows = np.memmap(Path(out_dir) / manifest.file, dtype=np.float32, mode="r", shape=tuple(manifest.shape))
    return rows, manifest


class ActivationSource:
    """Deterministic random batches of harvested rows: ``batch(step, n)`` is a pure function of (seed, step).

    Steps >= 0 draw (with replacement) from the first rows; negative steps draw from the last
    ``held_out_fraction`` of rows, which training batches never touch.
    """

    def __init__(
        self,
        out_dir: Path,
        name: str = "train",
        held_out_fraction: float = 0.05,
        seed: int = 0,
        in_memory: bool = False,
    ) -> None:
        rows, self.manifest = load_activations(out_dir, name)
        self.rows = np.array(rows) if in_memory else rows
        self.split_rows(len(rows), held_out_fraction, seed)

    def split_rows(self, n: int, held_out_fraction: float, seed: int) -> None:
        """Set aside the last ``held_out_fraction`` of n rows for evaluation; the rest serve training."""
        self.n_held_out = min(max(1, int(n * held_out_fraction)), n - 1) if n > 1 else 0
        self.n_train = n - self.n_held_out
        if self.n_train < 1 or self.n_held_out < 1:
            raise ValueError(f"{n} activation rows cannot be split into training and held-out rows")
        self.seed = seed
        self.held_out_fraction = held_out_fraction
        self.dim = int(self.manifest.shape[1])

    def spec(self) -> dict:
        """What this source serves, for the sweep's record of its inputs."""
        return {
            "kind": "activations",
            "file": self.manifest.file,
            "shape": self.manifest.shape,
            "module": self.manifest.module,
            "weights_hash": self.manifest.weights_hash,
            "held_out_fraction": self.held_out_fraction,
            "seed": self.seed,
        }

    def indices(self, step: int, batch_size: int) -> np.ndarray:
        """Row numbers of batch ``step``: training rows for step >= 0, held-out rows for step < 0."""
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + step * 7919 + 11) % (2**63 - 1))
        if step >= 0:
            return torch.randint(0, self.n_train, (batch_size,), generator=gen).numpy()
        return self.n_train + torch.randint(0, self.n_held_out, (batch_size,), generator=gen).numpy()

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        """Batch number ``step``: batch_size x dim float32 rows."""
        index = self.indices(step, batch_size)
        order = np.argsort(index, kind="stable")
        out = np.empty((batch_size, self.dim), dtype=np.float32)
        out[order] = self.rows[index[order]]  # read the memmap in ascending order
        return torch.from_numpy(out)

    def evaluation_set(self, n: int) -> torch.Tensor:
        """A fixed set of held-out rows, drawn from a step no training batch uses."""
        return self.batch(-1_000_000, n)
