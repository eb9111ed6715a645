"""Builders of small, format-correct run directories (feature indexes, vocab.json, metrics.json) for DB tests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session

from app.db.models import Base, Label, Vocabulary
from training.features.index import (
    FEATURES_DIR,
    VOCAB_FILE,
    FeatureIndex,
    FeatureIndexConfig,
    FeatureIndexMeta,
    save_feature_index,
)

TOKENS = ["<|doc|>", " the", " cat", " sat", " on", " mat", ".", ",", " a", " dog"] + [f" w{i}" for i in range(30)]
TAGS = ["NOUN", "VERB", "DET", "ADJ", "PUNCT"]
SMALL_CONFIG = FeatureIndexConfig(
    n_top=3, before=2, after=1, n_quantiles=2, per_quantile=2, hist_bins=5, n_top_tokens=3, n_logits=2, n_neighbours=2
)
N_TOKENS = 5_000
ACTIVATION_RMS_NORM = 2.0


@dataclass
class BuiltRun:
    """A run directory written by ``build_run`` and the indexes it holds, smallest dictionary first."""

    run_dir: Path
    indexes: list[FeatureIndex]

    def index(self, name: str) -> FeatureIndex:
        return next(index for index in self.indexes if index.meta.sae_name == name)


def is_dead(i: int) -> bool:
    """Which features the builder makes dead: every fourth, from index 3."""
    return i % 4 == 3


def is_rare_every_eighth(i: int) -> bool:
    """A choice of rare features for ``build_run(rare=...)``: every eighth, from index 1 (none of them dead)."""
    return i % 8 == 1


def weights_hash(name: str, salt: str = "") -> str:
    return hashlib.sha256(f"{name}{salt}".encode()).hexdigest()


def build_run(
    run_dir: Path,
    sizes: tuple[int, ...] = (8, 16),
    seed: int = 0,
    salt: str = "",
    config: FeatureIndexConfig = SMALL_CONFIG,
    tags: bool = True,
    rare: Callable[[int], bool] | None = None,
) -> BuiltRun:
    """Write a relu sweep of the given sizes into run_dir: features/<name>/, features/vocab.json, metrics.json.

    ``salt`` changes every weights hash (a retrained sweep); ``seed`` changes the statistics only. Features
    that are not dead fire at least ``config.min_firings`` times with a contribution well above the
    criterion, except those ``rare`` picks (not dead ones): of these, the first, third, ... fire fewer than
    ``min_firings`` times and the second, fourth, ... fire often but contribute below ``min_contribution``.
    """
    names = [f"relu_n{size}_l10.1" for size in sizes]
    infos = [
        {"name": n, "weights_hash": weights_hash(n, salt), "dict_size": s} for n, s in zip(names, sizes, strict=True)
    ]
    indexes = []
    for i, (name, size) in enumerate(zip(names, sizes, strict=True)):
        neighbours = {
            "smaller": infos[i - 1] if i > 0 else None,
            "larger": infos[i + 1] if i + 1 < len(sizes) else None,
        }
        meta = FeatureIndexMeta(
            sae_name=name,
            sae_dir=f"saes/saes/{name}",
            weights_hash=infos[i]["weights_hash"],
            arch="relu",
            dict_size=size,
            sparsity_key="l1",
            sparsity_value=0.1,
            layer=2,
            site="mlp_post",
            model="tinylm",
            n_tokens=N_TOKENS,
            activations={"file": "activations_train.f32"},
            config=config.model_dump(),
            neighbours=neighbours,
            activation_rms_norm=ACTIVATION_RMS_NORM,
        )
        rng = np.random.default_rng(seed * 1000 + i)
        index = FeatureIndex(meta=meta, arrays=feature_arrays(rng, size, config, neighbours, tags, rare))
        save_feature_index(index, run_dir / FEATURES_DIR / name)
        indexes.append(index)
    vocab = {"tokens": TOKENS, "tag_vocab": TAGS if tags else None}
    (run_dir / FEATURES_DIR / VOCAB_FILE).write_text(json.dumps(vocab))
    runs = [
        {"name": n, "arch": "relu", "dict_size": s, "l1": 0.1, "l0": 3.0 + k, "fvu": 0.1 / (k + 1), "ce_recovered": 0.9}
        for k, (n, s) in enumerate(zip(names, sizes, strict=True))
    ]
    (run_dir / "metrics.json").write_text(json.dumps({"runs": runs}))
    return BuiltRun(run_dir=run_dir, indexes=indexes)


def feature_arrays(
    rng: np.random.Generator,
    n: int,
    config: FeatureIndexConfig,
    neighbours: dict,
    tags: bool,
    rare: Callable[[int], bool] | None = None,
) -> dict[str, np.ndarray]:
    """Arrays of a feature index of n features with the documented names, dtypes and padding."""
    window, vocab = config.window, len(TOKENS)
    dead = np.array([is_dead(i) for i in range(n)])
    fire_count = np.where(dead, 0, rng.integers(config.min_firings, 200, n)).astype(np.int64)
    max_activation = np.where(dead, 0, rng.uniform(1, 5, n)).astype(np.float32)
    # Decoder atoms of unit norm: the contribution is the max activation.
    max_contribution = max_activation.copy()
    picked = [i for i in range(n) if rare is not None and rare(i) and not dead[i]]
    for k, i in enumerate(picked):
        if k % 2 == 0:
            fire_count[i] = 1 + i % (config.min_firings - 1) if config.min_firings > 1 else 0
        else:
            max_contribution[i] = config.min_contribution * ACTIVATION_RMS_NORM / 2

    def windows(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        positions = rng.integers(0, N_TOKENS, shape).astype(np.int64)
        filled = rng.random(shape) < 0.8
        filled.reshape(n, -1)[:, 0] = True  # every alive feature has at least its best example
        positions = np.where(filled & ~dead.reshape((n,) + (1,) * (len(shape) - 1)), positions, -1)
        values = np.where(positions >= 0, rng.uniform(0.1, 5, shape), 0).astype(np.float32)
        ids = rng.integers(0, vocab, shape + (window,)).astype(np.int32)
        ids[..., 0] = np.where(rng.random(shape) < 0.3, -1, ids[..., 0])  # a window that starts before its document
        acts = rng.uniform(0, 3, shape + (window,)).astype(np.float16)
        return positions, values, ids, acts

    top = windows((n, config.n_top))
    quantile = windows((n, config.n_quantiles, config.per_quantile))
    top_token_ids = rng.integers(0, vocab, (n, config.n_top_tokens)).astype(np.int32)
    top_token_ids[:, -1] = -1  # a padded slot in every row
    arrays = {
        "density": (fire_count / N_TOKENS).astype(np.float32),
        "mean_activation": np.where(dead, 0, max_activation / 2).astype(np.float32),
        "max_activation": max_activation,
        "fire_count": fire_count,
        "max_contribution": max_contribution,
        "histogram": rng.integers(0, 50, (n, config.hist_bins)).astype(np.int64) * ~dead[:, None],
        "top_positions": top[0],
        "top_values": top[1],
        "top_window_ids": top[2],
        "top_window_acts": top[3],
        "quantile_positions": quantile[0],
        "quantile_values": quantile[1],
        "quantile_window_ids": quantile[2],
        "quantile_window_acts": quantile[3],
        "top_token_ids": top_token_ids,
        "top_token_counts": rng.integers(1, 30, (n, config.n_top_tokens)).astype(np.int64),
        "top_token_mean": rng.uniform(0, 2, (n, config.n_top_tokens)).astype(np.float32),
        "promoted_ids": rng.integers(0, vocab, (n, config.n_logits)).astype(np.int32),
        "promoted_values": rng.uniform(0, 1, (n, config.n_logits)).astype(np.float32),
        "suppressed_ids": rng.integers(0, vocab, (n, config.n_logits)).astype(np.int32),
        "suppressed_values": rng.uniform(-1, 0, (n, config.n_logits)).astype(np.float32),
        "mmcs_with_larger": (
            rng.uniform(0, 1, n).astype(np.float32) if neighbours["larger"] else np.full(n, np.nan, np.float32)
        ),
    }
    if tags:
        counts = rng.integers(0, 20, (n, len(TAGS))).astype(np.int64)
        counts[:, 0] = 0  # a tag the features never fire on
        arrays["pos_counts"] = counts
    for direction, info in neighbours.items():
        if info is not None:
            arrays[f"neighbour_{direction}_ids"] = rng.integers(0, info["dict_size"], (n, config.n_neighbours)).astype(
                np.int64
            )
            arrays[f"neighbour_{direction}_cos"] = rng.uniform(0, 1, (n, config.n_neighbours)).astype(np.float32)
    return arrays


def add_labels(engine: Engine, labels: list[dict]) -> None:
    """Store label rows (``Label`` column names) directly, as the API would."""
    with engine.begin() as conn:
        conn.execute(insert(Label.__table__), labels)


def add_dictionaries(engine: Engine, sizes: dict[str, int]) -> None:
    """Index a dictionary (all features alive) per content hash, of the given size, so labels of it import."""
    from tests.app.builders import add_dictionary

    with Session(engine) as session:
        vocabulary = Vocabulary(content_hash=f"labels-io-{len(sizes)}", tokens=TOKENS, tag_vocab=TAGS)
        session.add(vocabulary)
        for n, (content_hash, size) in enumerate(sizes.items()):
            add_dictionary(session, vocabulary, f"relu_n{size}_{n}", content_hash, size, frozenset())
        session.commit()


def label_rows(engine: Engine) -> list[tuple]:
    """Every stored label as a tuple of its columns, by id."""
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(select(Label.__table__).order_by(Label.id))]


def table_counts(engine: Engine) -> dict[str, int]:
    """Rows per table of the app's schema."""
    with engine.connect() as conn:
        return {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in Base.metadata.sorted_tables
        }
