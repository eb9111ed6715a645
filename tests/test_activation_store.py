"""The sharded activation store: workers' shards equal one harvest; missing or broken shards are clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.activations.harvest import ActivationSource, harvest_module, load_activations, weights_hash
from training.activations.store import (
    STORE_MANIFEST,
    ShardedActivations,
    ShardedSource,
    StoreError,
    finalize_store,
    harvest_shard,
    load_store,
    merge_store,
    shard_rows,
)
from training.lm.tinylm import token_fingerprint

from .text_builders import tiny_lm, tiny_tokens

N_TOKENS = 1000  # 63 windows of 16, the last one short
CONTEXT = 16
MODULE = "blocks.2.mlp.act"
IDENTITY = {"layer": 2, "site": "mlp_post", "model_config_hash": "abc", "model": "tinylm"}


def _shards(store: Path, count: int, indices: list[int] | None = None, seed: int = 0) -> None:
    model, tokens = tiny_lm(seed), tiny_tokens()[:N_TOKENS]
    for i in range(count) if indices is None else indices:
        harvest_shard(model, MODULE, tokens, store, i, count, CONTEXT, 4, IDENTITY, progress=False)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """One worker's harvest of the whole stream, the reference the shards must equal."""
    out = tmp_path_factory.mktemp("single")
    harvest_module(tiny_lm(), MODULE, tiny_tokens()[:N_TOKENS], out, "train", CONTEXT, 4, IDENTITY, progress=False)
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store")
    _shards(out, 2, [1, 0])  # order of arrival does not matter
    finalize_store(out)
    return out


def test_shard_ranges_cover_the_stream_on_window_boundaries() -> None:
    ranges = [shard_rows(N_TOKENS, CONTEXT, i, 3) for i in range(3)]
    assert ranges == [(0, 336), (336, 672), (672, 1000)]
    assert all(start % CONTEXT == 0 for start, _ in ranges)
    with pytest.raises(ValueError, match="at most 63 shards"):
        shard_rows(N_TOKENS, CONTEXT, 0, 64)
    with pytest.raises(ValueError, match="index must be 0 to 2"):
        shard_rows(N_TOKENS, CONTEXT, 3, 3)


def test_two_workers_shards_read_back_equal_a_single_harvest(single: Path, store: Path) -> None:
    reference, manifest = load_activations(single, "train")
    sharded = ShardedActivations(store)
    assert len(sharded) == N_TOKENS
    every = np.arange(N_TOKENS)
    np.testing.assert_array_equal(sharded.rows(every), np.asarray(reference))
    scrambled = np.random.default_rng(0).permutation(every)[:300]
    np.testing.assert_array_equal(sharded.rows(scrambled), np.asarray(reference)[scrambled])
    store_manifest = json.loads((store / STORE_MANIFEST).read_text())
    assert store_manifest["shape"] == [N_TOKENS, 64] and store_manifest["dtype"] == "float32"
    assert (store_manifest["layer"], store_manifest["site"], store_manifest["module"]) == (2, "mlp_post", MODULE)
    assert store_manifest["model"] == "tinylm" and store_manifest["weights_hash"] == weights_hash(tiny_lm())
    assert store_manifest["tokens_fingerprint"] == token_fingerprint(tiny_tokens()[:N_TOKENS])
    assert store_manifest["shards"] == [
        {"file": "shard_00000.f32", "start": 0, "stop": 496},
        {"file": "shard_00001.f32", "start": 496, "stop": 1000},
    ]
    assert store_manifest["mean_sq_norm"] == pytest.approx(manifest.mean_sq_norm, rel=1e-9)


def test_sharded_source_serves_the_same_batches_as_the_single_file(single: Path, store: Path) -> None:
    plain, sharded = ActivationSource(single, seed=5), ShardedSource(store, seed=5)
    assert (sharded.dim, sharded.n_train, sharded.n_held_out) == (plain.dim, plain.n_train, plain.n_held_out)
    for step in (0, 1, 17, -2, -1_000_000):
        torch.testing.assert_close(sharded.batch(step, 256), plain.batch(step, 256), rtol=0, atol=0)
    assert sharded.spec()["kind"] == "activation_shards" and sharded.spec()["shards"] == 2


def test_merged_store_is_the_single_harvest_byte_for_byte(single: Path, store: Path, tmp_path: Path) -> None:
    merged = merge_store(store, tmp_path)
    assert (tmp_path / "activations_train.f32").read_bytes() == (single / "activations_train.f32").read_bytes()
    _, reference = load_activations(single, "train")
    for field in ("shape", "module", "weights_hash", "tokens_fingerprint", "context", "layer", "site", "model"):
        assert getattr(merged, field) == getattr(reference, field), field
    stamp = (tmp_path / "activations_train.f32").stat().st_mtime_ns
    merge_store(store, tmp_path)
    assert (tmp_path / "activations_train.f32").stat().st_mtime_ns == stamp


def test_a_finished_shard_is_reused_not_harvested_again(store: Path) -> None:
    stamp = (store / "shard_00001.f32").stat().st_mtime_ns
    _shards(store, 2, [1])
    assert (store / "shard_00001.f32").stat().st_mtime_ns == stamp


def test_a_missing_shard_is_a_clear_error(tmp_path: Path) -> None:
    _shards(tmp_path, 3, [0, 2])
    with pytest.raises(StoreError, match=r"shard 1/3 .* is missing: harvest it with --shard 1/3"):
        finalize_store(tmp_path)
    with pytest.raises(StoreError, match="holds no shards"):
        finalize_store(tmp_path / "empty")


def test_a_truncated_shard_is_a_clear_error(tmp_path: Path) -> None:
    _shards(tmp_path, 2)
    data = tmp_path / "shard_00001.f32"
    data.write_bytes(data.read_bytes()[:-4])
    with pytest.raises(StoreError, match=r"shard 1/2 .* truncated .* harvest it again with --shard 1/2"):
        finalize_store(tmp_path)


def test_a_shard_deleted_after_finalizing_is_a_clear_error(tmp_path: Path) -> None:
    _shards(tmp_path, 2)
    finalize_store(tmp_path)
    (tmp_path / "shard_00000.f32").unlink()
    with pytest.raises(StoreError, match=r"shard 0/2 .* is missing"):
        load_store(tmp_path)
    with pytest.raises(StoreError):
        ShardedSource(tmp_path)


def test_shards_of_different_harvests_are_refused(tmp_path: Path) -> None:
    _shards(tmp_path, 2, [0])
    _shards(tmp_path, 2, [1], seed=1)  # another model's weights
    with pytest.raises(StoreError, match="differs from shard 0 in weights_hash"):
        finalize_store(tmp_path)
