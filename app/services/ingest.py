"""Ingest of a run directory's feature index artifacts into the app's database (``monosemantic index``).

Vocabularies are keyed by a hash of their token list and dictionaries by the hash of their weights.
Re-ingesting a dictionary replaces its feature and example rows in one transaction and never touches
labels, which name the dictionary's hash and the feature's index rather than row ids. A dictionary whose
artifact is unchanged since it was last ingested keeps its rows (only its summary metrics are refreshed).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import Connection, Engine, Table, delete, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Dictionary, Example, Feature, Vocabulary, utc_now
from app.services.examples import encode_windows
from training.features.evidence import DEFAULT_MIN_CONTRIBUTION, DEFAULT_MIN_FIRINGS, EvidenceCounts, count_evidence
from training.features.index import (
    FEATURES_DIR,
    INDEX_META,
    INDEX_WEIGHTS,
    FeatureIndex,
    FeatureIndexMeta,
    feature_index_folders,
    index_evidence,
    load_feature_index,
    load_vocab,
)
from training.formats.run_saes import imported_records

# Bump when the rows made from an artifact change, so `index` re-ingests artifacts it would skip.
INGEST_VERSION = 3
FEATURES_PER_BATCH = 512
EXAMPLE_ARRAYS = ("top_positions", "top_values", "top_window_", "quantile_")

FEATURES = Feature.__table__
EXAMPLES = Example.__table__
DICTIONARIES = Dictionary.__table__
VOCABULARIES = Vocabulary.__table__


@dataclass
class DictionarySummary:
    """What ingest did with one dictionary."""

    name: str
    content_hash: str
    dictionary_id: int
    dict_size: int
    alive: int  # features with enough evidence
    dead: int
    rare: int
    examples: int
    seconds: float
    unchanged: bool  # artifact already ingested: feature and example rows kept as they were

    @property
    def rows_per_s(self) -> float:
        """Feature and example rows written per second (0 when nothing was written)."""
        if self.unchanged or self.seconds <= 0:
            return 0.0
        return (self.dict_size + self.examples) / self.seconds


def ingest_run(
    bind: Engine | sessionmaker[Session],
    run_dir: Path,
    force: bool = False,
    on_dictionary: Callable[[DictionarySummary], None] | None = None,
) -> list[DictionarySummary]:
    """Ingest every finished feature index of run_dir; one summary per dictionary, in name order.

    Assumes the schema is at head. ``force`` rewrites dictionaries whose artifact is unchanged;
    ``on_dictionary`` is called after each dictionary is committed.
    """
    engine = bind if isinstance(bind, Engine) else bind.kw["bind"]
    run_dir = Path(run_dir)
    folders = feature_index_folders(run_dir)
    if not folders:
        raise ValueError(
            f"no feature index in {run_dir / FEATURES_DIR}: train the SAEs with `monosemantic run` and index them"
        )
    try:
        tokens, tag_vocab = load_vocab(run_dir)
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise ValueError(f"vocabulary of {run_dir / FEATURES_DIR} is missing or unreadable: {exc}") from exc
    metrics = _run_metrics(run_dir)
    with engine.begin() as conn:
        vocabulary_id = _upsert_vocabulary(conn, tokens, tag_vocab)
    summaries = []
    for folder in folders:
        summary = _ingest_dictionary(engine, run_dir, folder, vocabulary_id, tokens, tag_vocab, metrics, force)
        summaries.append(summary)
        if on_dictionary is not None:
            on_dictionary(summary)
    return summaries


def _run_metrics(run_dir: Path) -> dict[str, dict]:
    """metrics.json's per-SAE records by name (empty when the run has no metrics yet)."""
    imported = {
        name: {**record["metrics"], "source": record["source"]} for name, record in imported_records(run_dir).items()
    }
    path = run_dir / "metrics.json"
    if not path.exists():
        return imported
    try:
        runs = json.loads(path.read_text())["runs"]
        return {record["name"]: record for record in runs} | imported
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is unreadable: {exc}") from exc


def vocabulary_hash(tokens: list[str]) -> str:
    """sha256 of a token list, the identity of a vocabulary."""
    return hashlib.sha256(json.dumps(tokens, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


def _upsert_vocabulary(conn: Connection, tokens: list[str], tag_vocab: list[str] | None) -> int:
    content_hash = vocabulary_hash(tokens)
    row = conn.execute(
        select(VOCABULARIES.c.id, VOCABULARIES.c.tag_vocab).where(VOCABULARIES.c.content_hash == content_hash)
    ).first()
    if row is None:
        values = {"content_hash": content_hash, "tokens": tokens, "tag_vocab": tag_vocab}
        return conn.execute(insert(VOCABULARIES).values(values)).inserted_primary_key[0]
    if row.tag_vocab != tag_vocab:
        conn.execute(update(VOCABULARIES).where(VOCABULARIES.c.id == row.id).values(tag_vocab=tag_vocab))
    return row.id


def artifact_fingerprint(folder: Path) -> str:
    """sha256 of a feature index's files and of the ingest version: equal means nothing to re-ingest."""
    digest = hashlib.sha256(f"ingest v{INGEST_VERSION}\n".encode())
    for name in (INDEX_META, INDEX_WEIGHTS):
        with open(folder / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _ingest_dictionary(
    engine: Engine,
    run_dir: Path,
    folder: Path,
    vocabulary_id: int,
    tokens: list[str],
    tag_vocab: list[str] | None,
    metrics: dict[str, dict],
    force: bool,
) -> DictionarySummary:
    """Upsert one dictionary and, unless its artifact is unchanged, replace its features and examples."""
    start = time.perf_counter()
    fingerprint = artifact_fingerprint(folder)
    index = load_feature_index(folder)
    meta = index.meta
    levels = index_evidence(index)
    counts = count_evidence(levels)
    config = meta.config
    record = metrics.get(meta.sae_name, {})
    values = {
        "content_hash": meta.weights_hash,
        "name": meta.sae_name,
        "run_dir": str(run_dir.resolve()),
        "artifact_dir": str(folder.resolve()),
        "model": meta.model,
        "layer": meta.layer,
        "site": meta.site,
        "arch": meta.arch,
        "dict_size": meta.dict_size,
        "sparsity_key": meta.sparsity_key,
        "sparsity_value": meta.sparsity_value,
        "alive": counts.alive,
        "dead": counts.dead,
        "rare": counts.rare,
        "min_firings": config.get("min_firings", DEFAULT_MIN_FIRINGS),
        "min_contribution": config.get("min_contribution", DEFAULT_MIN_CONTRIBUTION)
        if "max_contribution" in index.arrays
        else None,
        "l0": _finite(record.get("l0")),
        "fvu": _finite(record.get("fvu")),
        "ce_recovered": _finite(record.get("ce_recovered")),
        "source": record.get("source", {}).get("format", "ours"),
        "holds": record.get("holds"),
        "moved": record.get("moved"),
        "source_metadata": record.get("source"),
        "n_tokens": meta.n_tokens,
        "vocabulary_id": vocabulary_id,
    }
    with engine.begin() as conn:
        existing = conn.execute(
            select(DICTIONARIES.c.id, DICTIONARIES.c.artifact_fingerprint).where(
                DICTIONARIES.c.content_hash == meta.weights_hash
            )
        ).first()
        if existing is not None and existing.artifact_fingerprint == fingerprint and not force:
            conn.execute(update(DICTIONARIES).where(DICTIONARIES.c.id == existing.id).values(values))
            return _summary(meta, existing.id, counts, _count_examples(conn, existing.id), start, unchanged=True)
        values |= {"indexed_at": utc_now(), "artifact_fingerprint": fingerprint}
        if existing is None:
            dictionary_id = conn.execute(insert(DICTIONARIES).values(values)).inserted_primary_key[0]
        else:
            dictionary_id = existing.id
            feature_ids = select(FEATURES.c.id).where(FEATURES.c.dictionary_id == dictionary_id)
            conn.execute(delete(EXAMPLES).where(EXAMPLES.c.feature_id.in_(feature_ids)))
            conn.execute(delete(FEATURES).where(FEATURES.c.dictionary_id == dictionary_id))
            conn.execute(update(DICTIONARIES).where(DICTIONARIES.c.id == dictionary_id).values(values))
        n_examples = 0
        groups = index.arrays.get("duplicate_of")
        for lo in range(0, meta.dict_size, FEATURES_PER_BATCH):
            hi = min(lo + FEATURES_PER_BATCH, meta.dict_size)
            rows = list(feature_rows(index, dictionary_id, tokens, tag_vocab, lo, hi))
            for row in rows:
                row["evidence"] = str(levels[row["index"]])
                row["alive"] = row["evidence"] == "alive"
                row["group_index"] = _group_index(groups, row["index"]) if row["alive"] else None
            conn.execute(insert(FEATURES), rows)
            ids = dict(
                conn.execute(
                    select(FEATURES.c.index, FEATURES.c.id).where(
                        FEATURES.c.dictionary_id == dictionary_id, FEATURES.c.index >= lo, FEATURES.c.index < hi
                    )
                ).all()
            )
            feature_ids = np.array([ids[i] for i in range(lo, hi)], dtype=np.int64)
            n_examples += bulk_insert(conn, EXAMPLES, example_columns(index, feature_ids, lo, hi))
    return _summary(meta, dictionary_id, counts, n_examples, start, unchanged=False)


def _group_index(groups: np.ndarray | None, index: int) -> int:
    """An alive feature's group representative; an index made before groups were kept leaves each on its own."""
    if groups is None or groups[index] < 0:
        return index
    return int(groups[index])


def _count_examples(conn: Connection, dictionary_id: int) -> int:
    joined = EXAMPLES.join(FEATURES, EXAMPLES.c.feature_id == FEATURES.c.id)
    query = select(func.count()).select_from(joined).where(FEATURES.c.dictionary_id == dictionary_id)
    return conn.execute(query).scalar_one()


def _summary(
    meta: FeatureIndexMeta, dictionary_id: int, counts: EvidenceCounts, examples: int, start: float, unchanged: bool
) -> DictionarySummary:
    return DictionarySummary(
        name=meta.sae_name,
        content_hash=meta.weights_hash,
        dictionary_id=dictionary_id,
        dict_size=meta.dict_size,
        alive=counts.alive,
        dead=counts.dead,
        rare=counts.rare,
        examples=examples,
        seconds=time.perf_counter() - start,
        unchanged=unchanged,
    )


def feature_rows(
    index: FeatureIndex, dictionary_id: int, tokens: list[str], tag_vocab: list[str] | None, lo: int, hi: int
) -> Iterator[dict]:
    """The ``features`` rows of features lo..hi-1 of a feature index (see ``Feature`` for the JSON shapes)."""
    a = {name: array[lo:hi].tolist() for name, array in index.arrays.items() if not name.startswith(EXAMPLE_ARRAYS)}
    n = hi - lo
    pos_counts = a.get("pos_counts")
    mmcs = a.get("mmcs_with_larger", [None] * n)
    neighbour_sets = [
        (direction, info, a[f"neighbour_{direction}_ids"], a[f"neighbour_{direction}_cos"])
        for direction, info in index.meta.neighbours.items()
        if info is not None and f"neighbour_{direction}_ids" in a
    ]
    n_vocab = len(tokens)
    for row in range(n):
        top = zip(a["top_token_ids"][row], a["top_token_counts"][row], a["top_token_mean"][row], strict=True)
        top_tokens = [{"token_id": t, "count": c, "mean_activation": _finite(m)} for t, c, m in top if t >= 0]
        tags = []
        if pos_counts is not None:
            names = tag_vocab or []
            tags = [
                {"tag": names[j] if j < len(names) else str(j), "count": c}
                for j, c in enumerate(pos_counts[row])
                if c > 0
            ]
            tags.sort(key=lambda tag: -tag["count"])
        neighbours = [
            {
                "dictionary_hash": info["weights_hash"],
                "dictionary_size": info["dict_size"],
                "direction": direction,
                "index": j,
                "cosine": _finite(cos),
            }
            for direction, info, ids, cosines in neighbour_sets
            for j, cos in zip(ids[row], cosines[row], strict=True)
            if j >= 0
        ]
        max_activation = _finite(a["max_activation"][row]) or 0.0
        contribution = a.get("max_contribution")
        yield {
            "dictionary_id": dictionary_id,
            "index": lo + row,
            "alive": a["fire_count"][row] > 0,
            "fire_count": a["fire_count"][row],
            "max_contribution": None if contribution is None else _finite(contribution[row]),
            "density": _finite(a["density"][row]) or 0.0,
            "mean_activation": _finite(a["mean_activation"][row]) or 0.0,
            "max_activation": max_activation,
            "mmcs_with_larger": _finite(mmcs[row]),
            "top_token_text": " ".join(
                text for t in (entry["token_id"] for entry in top_tokens) if (text := _display(tokens, n_vocab, t))
            ),
            "histogram": {"max": max_activation, "counts": a["histogram"][row]},
            "top_tokens": top_tokens,
            "logit_promoted": _logits(a, "promoted", row),
            "logit_suppressed": _logits(a, "suppressed", row),
            "pos_tags": tags,
            "neighbours": neighbours,
        }


def _display(tokens: list[str], n_vocab: int, token_id: int) -> str:
    return tokens[token_id].strip() if token_id < n_vocab else ""


def _logits(a: dict[str, list], side: str, row: int) -> list[dict]:
    """A feature's promoted or suppressed tokens; none when the run has no LM to compute them from."""
    if f"{side}_ids" not in a:
        return []
    pairs = zip(a[f"{side}_ids"][row], a[f"{side}_values"][row], strict=True)
    return [{"token_id": t, "value": _finite(v)} for t, v in pairs if t >= 0]


def example_columns(index: FeatureIndex, feature_ids: np.ndarray, lo: int, hi: int) -> dict[str, list]:
    """The ``examples`` rows of features lo..hi-1 as columns: top contexts by rank, then quantile samples.

    ``feature_ids`` holds the row id of each feature lo..hi-1; slots whose position is -1 are empty.
    """
    a = index.arrays
    center = int(index.meta.config["before"])
    top = _window_columns(
        "top", a["top_positions"][lo:hi], a["top_window_ids"][lo:hi], a["top_window_acts"][lo:hi], feature_ids, None
    )
    positions = a["quantile_positions"][lo:hi]
    n, n_quantiles, per_quantile = positions.shape
    slots, width = n_quantiles * per_quantile, a["quantile_window_ids"].shape[-1]
    quantile = _window_columns(
        "quantile",
        positions.reshape(n, slots),
        a["quantile_window_ids"][lo:hi].reshape(n, slots, width),
        a["quantile_window_acts"][lo:hi].reshape(n, slots, width),
        feature_ids,
        per_quantile,
    )
    columns = {name: top[name] + quantile[name] for name in top}
    columns["center"] = [center] * len(columns["feature_id"])
    return columns


def _window_columns(
    kind: str,
    positions: np.ndarray,
    window_ids: np.ndarray,
    window_acts: np.ndarray,
    feature_ids: np.ndarray,
    per_quantile: int | None,
) -> dict[str, list]:
    """Columns for the filled slots of (F, S) positions; with per_quantile, slot s is quantile s // per_quantile."""
    feature_at, slot = np.nonzero(positions >= 0)
    token_bytes, act_bytes = encode_windows(window_ids[feature_at, slot], window_acts[feature_at, slot])
    n = len(feature_at)
    if per_quantile is None:
        ranks, quantiles = slot.tolist(), [None] * n
    else:
        ranks, quantiles = (slot % per_quantile).tolist(), (slot // per_quantile).tolist()
    return {
        "feature_id": feature_ids[feature_at].tolist(),
        "kind": [kind] * n,
        "rank": ranks,
        "quantile": quantiles,
        "position": positions[feature_at, slot].tolist(),
        "token_ids": token_bytes,
        "activations": act_bytes,
    }


def bulk_insert(conn: Connection, table: Table, columns: dict[str, list], direct: bool | None = None) -> int:
    """Insert rows given as equal-length columns in one executemany; the number of rows.

    ``direct`` (default: on SQLite) sends the compiled INSERT straight to the driver's executemany with
    plain tuples: the values are already what the driver takes, and skipping Core's per-row parameter
    processing makes the bulk of an index (examples) about three times faster. Otherwise Core's
    executemany runs (batched multi-row VALUES where the dialect supports it).
    """
    names = list(columns)
    n = len(columns[names[0]]) if names else 0
    if n == 0:
        return 0
    if not (conn.dialect.name == "sqlite" if direct is None else direct):
        conn.execute(insert(table), [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)])
        return n
    compiled = insert(table).compile(dialect=conn.dialect, column_keys=names)
    conn.exec_driver_sql(str(compiled), list(zip(*(columns[name] for name in compiled.positiontup), strict=True)))
    return n
