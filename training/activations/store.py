"""A sharded activation store: several harvest workers each write a range of rows; training streams from them.

A store folder (``<run>/activations/train_shards/``) holds, for shard i of n:
- ``shard_0000i.f32``: float32 rows (rows x dim) of the token positions [start, stop) of the stream;
- ``shard_0000i.json``: the worker's ``ShardRecord`` (its row range, the harvest's identity: module,
  model name and weights hash, tokens fingerprint and count, context; the sum of squared row norms);
- ``manifest.json``: the ``StoreManifest`` (shape, dtype, layer, site, module, model, weights hash,
  tokens fingerprint, mean squared norm, and the shard list with row ranges), written by
  ``finalize_store`` once every shard is present, consistent with the others and complete on disk.

Shard boundaries fall on boundaries of the model's context windows, so the rows equal those of one
harvest of the whole stream (``harvest_module``), and ``ShardedSource`` serves exactly the batches an
``ActivationSource`` serves from that one file. ``merge_store`` writes that one file for readers that
need it (the feature index).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.activations.harvest import (
    ActivationManifest,
    ActivationSource,
    load_activations,
    weights_hash,
    write_module_rows,
)
from training.lm.tinylm import token_fingerprint

STORE_DIR = "train_shards"
STORE_MANIFEST = "manifest.json"
_FLOAT_BYTES = 4


class StoreError(ValueError):
    """A shard is missing, truncated or inconsistent; the message names it and says how to fix it."""


@dataclass
class ShardRecord:
    """What one harvest worker wrote (``shard_<i>.json``)."""

    index: int
    count: int
    file: str
    start: int  # first token position (row) of the stream in this shard
    stop: int  # one past the last
    dim: int
    sum_sq_norm: float
    module: str
    site: str
    layer: int | None
    model: str
    weights_hash: str
    model_config_hash: str
    tokens_fingerprint: str  # of the whole token stream, not of this shard's slice
    n_tokens: int  # of the whole token stream
    context: int
    seconds: float


@dataclass
class StoreManifest:
    """A complete store (``manifest.json``): the whole array's identity and where each row range lives."""

    shape: list[int]
    dtype: str
    layer: int | None
    site: str
    module: str
    model: str
    weights_hash: str
    model_config_hash: str
    tokens_fingerprint: str
    context: int
    mean_sq_norm: float
    seconds: float  # harvest time summed over the workers
    shards: list[dict] = field(default_factory=list)  # {"file", "start", "stop"} in row order


def shard_name(index: int) -> str:
    return f"shard_{index:05d}"


def shard_rows(n_tokens: int, context: int, index: int, count: int) -> tuple[int, int]:
    """Row range [start, stop) of shard ``index`` of ``count``: whole context windows, split as evenly as can be."""
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count} does not exist: the index must be 0 to {count - 1}")
    windows = -(-n_tokens // context)
    if count > windows:
        raise ValueError(f"{n_tokens} tokens make {windows} windows of {context}: use at most {windows} shards")
    first, last = index * windows // count, (index + 1) * windows // count
    return first * context, min(last * context, n_tokens)


def harvest_shard(
    model: nn.Module,
    module_name: str,
    tokens: np.ndarray,
    store_dir: Path,
    index: int,
    count: int,
    context: int,
    chunk_contexts: int = 64,
    identity: dict | None = None,
    progress: bool = True,
) -> ShardRecord:
    """Harvest shard ``index`` of ``count`` of the rows of ``tokens`` into ``store_dir``; reuse it if already there.

    ``identity`` (layer, site, model_config_hash, model) goes into the record, as in ``harvest_module``.
    Workers may run at once in the same store: each writes only its own files.
    """
    store_dir = Path(store_dir)
    store_dir.mkdir(parents=True, exist_ok=True)
    start, stop = shard_rows(len(tokens), context, index, count)
    identity = {"layer": None, "site": module_name, "model_config_hash": "", "model": "tinylm", **(identity or {})}
    key = {
        "index": index,
        "count": count,
        "start": start,
        "stop": stop,
        "module": module_name,
        "weights_hash": weights_hash(model),
        "tokens_fingerprint": token_fingerprint(tokens),
        "context": context,
    }
    name = shard_name(index)
    record_path, data_path = store_dir / f"{name}.json", store_dir / f"{name}.f32"
    if record_path.exists():
        old = ShardRecord(**json.loads(record_path.read_text()))
        if {k: getattr(old, k) for k in key} == key and _file_complete(data_path, old.stop - old.start, old.dim):
            return old
        record_path.unlink()
    began = time.perf_counter()
    dim, sum_sq = write_module_rows(
        model, module_name, tokens[start:stop], data_path, context, chunk_contexts, progress, name
    )
    record = ShardRecord(
        file=data_path.name,
        dim=dim,
        sum_sq_norm=sum_sq,
        site=identity["site"],
        layer=identity["layer"],
        model=identity["model"],
        model_config_hash=identity["model_config_hash"],
        n_tokens=len(tokens),
        seconds=time.perf_counter() - began,
        **key,
    )
    _write_json(record_path, asdict(record))
    return record


def _write_json(path: Path, data: dict) -> None:
    """Write JSON under a temporary name, then rename, so readers never see half a file."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def _file_complete(path: Path, rows: int, dim: int) -> bool:
    return path.exists() and path.stat().st_size == rows * dim * _FLOAT_BYTES


def _check_shard_file(store_dir: Path, file: str, rows: int, dim: int, index: int, count: int) -> None:
    path = store_dir / file
    if not path.exists():
        raise StoreError(f"shard {index}/{count} ({path}) is missing: harvest it again with --shard {index}/{count}")
    size, want = path.stat().st_size, rows * dim * _FLOAT_BYTES
    if size != want:
        raise StoreError(
            f"shard {index}/{count} ({path}) is truncated or corrupt: {size} bytes where {rows} rows of {dim} "
            f"float32 take {want}; delete it and harvest it again with --shard {index}/{count}"
        )


_IDENTITY = ("count", "dim", "module", "site", "layer", "model", "weights_hash", "tokens_fingerprint", "n_tokens")


def finalize_store(store_dir: Path) -> StoreManifest:
    """Check that every shard is present, complete and from the same harvest; write and return the manifest."""
    store_dir = Path(store_dir)
    paths = sorted(store_dir.glob("shard_*.json"))
    if not paths:
        raise StoreError(f"{store_dir} holds no shards: run `monosemantic harvest ... --shard i/n` for each i")
    records = [ShardRecord(**json.loads(p.read_text())) for p in paths]
    first = records[0]
    for record in records[1:]:
        differs = [k for k in _IDENTITY if getattr(record, k) != getattr(first, k)]
        if differs:
            raise StoreError(
                f"shard {record.index} in {store_dir} differs from shard {first.index} in {', '.join(differs)}: "
                "the shards come from different harvests; delete the folder and harvest every shard again"
            )
    by_index = {r.index: r for r in records}
    missing = [i for i in range(first.count) if i not in by_index]
    if missing:
        raise StoreError(
            f"shard {missing[0]}/{first.count} ({shard_name(missing[0])}.json) of {store_dir} is missing: "
            f"harvest it with --shard {missing[0]}/{first.count}"
        )
    ordered = [by_index[i] for i in range(first.count)]
    expected = [shard_rows(first.n_tokens, first.context, i, first.count) for i in range(first.count)]
    for record, (start, stop) in zip(ordered, expected, strict=True):
        if (record.start, record.stop) != (start, stop):
            raise StoreError(
                f"shard {record.index} of {store_dir} covers rows {record.start}-{record.stop}, not {start}-{stop}"
            )
        _check_shard_file(store_dir, record.file, stop - start, record.dim, record.index, record.count)
    manifest = StoreManifest(
        shape=[first.n_tokens, first.dim],
        dtype="float32",
        layer=first.layer,
        site=first.site,
        module=first.module,
        model=first.model,
        weights_hash=first.weights_hash,
        model_config_hash=first.model_config_hash,
        tokens_fingerprint=first.tokens_fingerprint,
        context=first.context,
        mean_sq_norm=sum(r.sum_sq_norm for r in ordered) / max(first.n_tokens, 1),
        seconds=sum(r.seconds for r in ordered),
        shards=[{"file": r.file, "start": r.start, "stop": r.stop} for r in ordered],
    )
    _write_json(store_dir / STORE_MANIFEST, asdict(manifest))
    return manifest


def load_store(store_dir: Path) -> StoreManifest:
    """The manifest of a finalized store, after checking that every shard file is there and complete."""
    store_dir = Path(store_dir)
    path = store_dir / STORE_MANIFEST
    if not path.exists():
        raise StoreError(f"{store_dir} has no {STORE_MANIFEST}: finalize the store once every shard is harvested")
    manifest = StoreManifest(**json.loads(path.read_text()))
    count = len(manifest.shards)
    for i, shard in enumerate(manifest.shards):
        _check_shard_file(store_dir, shard["file"], shard["stop"] - shard["start"], manifest.shape[1], i, count)
    return manifest


class ShardedActivations:
    """The rows of a store read through one memmap per shard, addressed by global row number."""

    def __init__(self, store_dir: Path) -> None:
        self.store_dir = Path(store_dir)
        self.manifest = load_store(self.store_dir)
        dim = self.manifest.shape[1]
        self.starts = np.asarray([s["start"] for s in self.manifest.shards], dtype=np.int64)
        self.maps = [
            np.memmap(self.store_dir / s["file"], dtype=np.float32, mode="r", shape=(s["stop"] - s["start"], dim))
            for s in self.manifest.shards
        ]

    def __len__(self) -> int:
        return int(self.manifest.shape[0])

    def rows(self, index: np.ndarray) -> np.ndarray:
        """Rows at the global positions ``index`` (any order), as a new float32 array."""
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((len(index), self.manifest.shape[1]), dtype=np.float32)
        order = np.argsort(index, kind="stable")
        ordered = index[order]
        shard = np.searchsorted(self.starts, ordered, side="right") - 1
        for s in np.unique(shard):
            take = shard == s
            out[order[take]] = self.maps[s][ordered[take] - self.starts[s]]  # ascending reads per shard
        return out


class ShardedSource(ActivationSource):
    """``ActivationSource``'s batches (same rows for the same step and seed) read from a sharded store."""

    def __init__(self, store_dir: Path, held_out_fraction: float = 0.05, seed: int = 0) -> None:
        self.store = ShardedActivations(store_dir)
        self.manifest = self.store.manifest
        self.split_rows(len(self.store), held_out_fraction, seed)

    def spec(self) -> dict:
        """What this source serves, for the sweep's record of its inputs."""
        return {
            "kind": "activation_shards",
            "shards": len(self.manifest.shards),
            "shape": self.manifest.shape,
            "module": self.manifest.module,
            "weights_hash": self.manifest.weights_hash,
            "held_out_fraction": self.held_out_fraction,
            "seed": self.seed,
        }

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        """Batch number ``step``: batch_size x dim float32 rows."""
        return torch.from_numpy(self.store.rows(self.indices(step, batch_size)))


def merge_store(store_dir: Path, out_dir: Path, name: str = "train", chunk_rows: int = 65_536) -> ActivationManifest:
    """Write the store's rows as one ``activations_<name>.f32`` with its manifest, as ``harvest_module`` would.

    Readers that want one memmap (the feature index) read that; an up-to-date merged file is kept.
    """
    manifest = load_store(store_dir)
    out_dir = Path(out_dir)
    manifest_path = out_dir / f"activations_{name}.json"
    identity = (manifest.module, manifest.weights_hash, manifest.tokens_fingerprint, manifest.context)
    if manifest_path.exists():
        _, old = load_activations(out_dir, name)
        if (old.module, old.weights_hash, old.tokens_fingerprint, old.context) == identity:
            return old
        manifest_path.unlink()
    data_path = out_dir / f"activations_{name}.f32"
    tmp = data_path.with_name(data_path.name + ".tmp")
    with tmp.open("wb") as out:
        for shard in manifest.shards:
            with (Path(store_dir) / shard["file"]).open("rb") as source:
                shutil.copyfileobj(source, out, chunk_rows * manifest.shape[1] * _FLOAT_BYTES)
    tmp.replace(data_path)
    merged = ActivationManifest(
        file=data_path.name,
        shape=manifest.shape,
        dtype=manifest.dtype,
        layer=manifest.layer,
        site=manifest.site,
        module=manifest.module,
        context=manifest.context,
        model_config_hash=manifest.model_config_hash,
        weights_hash=manifest.weights_hash,
        tokens_fingerprint=manifest.tokens_fingerprint,
        mean_sq_norm=manifest.mean_sq_norm,
        seconds=manifest.seconds,
        tokens_per_s=manifest.shape[0] / max(manifest.seconds, 1e-9),
        model=manifest.model,
    )
    _write_json(manifest_path, asdict(merged))
    return merged
