"""A labelling bundle: the feature index of a record's dictionaries, compact enough to commit beside it.

Labelling needs only what a feature page shows, never the weights or the activations. ``write_bundle``
copies the feature index of the dictionaries that a record's estimates read into ``<record>/labelling/``,
each as an xz-compressed safetensors file with the narrowest exact dtypes (token ids as uint16, counts
as uint32, window activations already float16) and its meta record; ``unpack_bundle`` turns a bundle back
into the ``features/`` folder of a run directory that ``monosemantic index``'s ingest reads, array for
array what the run indexed. Dictionaries are named by their weights hash, so labels given on a bundle
carry over to any rebuild that trains the same weights.

Layout of ``<record>/labelling/``:
- ``manifest.json``: format version, the dictionaries (name, weights hash, size, arch, sparsity, file,
  bytes) and why they were chosen;
- ``<sae name>.json``: the dictionary's ``FeatureIndexMeta``; ``<sae name>.safetensors.xz``: its arrays
  (xz rather than gzip: a third smaller on feature indexes, and in Python's standard library too);
- ``vocab.json.gz``: the run's ``features/vocab.json``; ``metrics.json.gz``: the run's ``metrics.json``,
  so the served pages show the same dictionary metrics and feature-count estimate.
"""

from __future__ import annotations

import gzip
import json
import lzma
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from training.features.index import (
    FEATURES_DIR,
    INDEX_META,
    VOCAB_FILE,
    FeatureIndex,
    FeatureIndexMeta,
    feature_index_folders,
    load_feature_index,
    save_feature_index,
)

BUNDLE_DIR = "labelling"
MANIFEST = "manifest.json"
BUNDLE_VERSION = 1
# Every regeneration of a committed bundle stays in the repository's history: past this many bytes the
# less wanted dictionaries are left out (and the manifest says which).
BUNDLE_BUDGET = 20 * 2**20
UINT16_EMPTY = np.iinfo(np.uint16).max  # stands for -1 (outside the document, no token) in uint16 id arrays
# Arrays of token ids with -1 for "none": stored as uint16 when the vocabulary fits below the sentinel.
TOKEN_ID_ARRAYS = ("top_window_ids", "quantile_window_ids", "top_token_ids", "promoted_ids", "suppressed_ids")
# Non-negative counts that fit 32 bits for any corpus this project indexes.
COUNT_ARRAYS = ("histogram", "top_token_counts", "pos_counts", "fire_count")
# Token positions (-1 for an empty slot) fit int32 for any corpus under two billion tokens.
INT32_ARRAYS = ("top_positions", "quantile_positions")


@dataclass(frozen=True)
class BundledDictionary:
    """One dictionary of a bundle, as ``manifest.json`` lists it."""

    name: str
    weights_hash: str
    dict_size: int
    arch: str
    sparsity_key: str
    sparsity_value: float
    file: str
    bytes: int


def bundle_choice(metrics: dict) -> tuple[list[str], str]:
    """The SAE names a record's estimates read, most wanted first, and the rule that chose them in words.

    For every sweep (arch and sparsity) the two sizes around the stable-atom feature count: first the
    smallest size at or above it, then the largest at or below it; without an estimate, each sweep's
    largest size.
    """
    sweeps: dict[tuple, list[dict]] = {}
    for run in metrics.get("runs", []):
        key = (run["arch"], run.get("l1"), run.get("k"))
        sweeps.setdefault(key, []).append(run)
    value = (metrics.get("feature_count_estimate") or {}).get("value")
    above: list[str] = []
    below: list[str] = []
    for runs in sweeps.values():
        runs.sort(key=lambda run: run["dict_size"])
        if value is None:
            above.append(runs[-1]["name"])
            continue
        larger = [run["name"] for run in runs if run["dict_size"] >= value]
        smaller = [run["name"] for run in runs if run["dict_size"] <= value]
        above += larger[:1]
        below += [name for name in smaller[-1:] if name not in larger[:1]]
    if value is None:
        return above, "the largest dictionary of every sweep (the run has no feature-count estimate)"
    rule = (
        f"for every sweep, the dictionary sizes around the stable-atom feature count ({value}): the smallest at "
        "or above it, then the largest at or below it"
    )
    return above + below, rule


def compact_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The index's arrays in the narrowest dtypes that give them back exactly (see ``restore_arrays``)."""
    out = {}
    for name, array in arrays.items():
        if name in TOKEN_ID_ARRAYS and array.size and array.max() < UINT16_EMPTY:
            array = np.where(array < 0, UINT16_EMPTY, array).astype(np.uint16)
        elif name in COUNT_ARRAYS and (not array.size or (array.min() >= 0 and array.max() <= np.iinfo(np.uint32).max)):
            array = array.astype(np.uint32)
        elif name in INT32_ARRAYS:
            array = array.astype(np.int32)
        out[name] = np.ascontiguousarray(array)
    return out


def restore_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The dtypes the feature index writes, from ``compact_arrays``' narrower ones."""
    out = {}
    for name, array in arrays.items():
        if array.dtype == np.uint16:
            array = np.where(array == UINT16_EMPTY, -1, array.astype(np.int32)).astype(np.int32)
        elif array.dtype == np.uint32:
            array = array.astype(np.int64)
        elif name in INT32_ARRAYS:
            array = array.astype(np.int64)
        out[name] = array
    return out


def write_bundle(
    run_dir: Path, record_dir: Path, names: list[str] | None = None, budget: int = BUNDLE_BUDGET
) -> list[BundledDictionary]:
    """Write the labelling bundle of ``names`` (default: ``bundle_choice``) into ``<record_dir>/labelling/``.

    Dictionaries are added in order while their files stay within ``budget`` bytes (the first always is);
    the manifest lists those left out. Files of dictionaries no longer chosen are removed, so a
    regenerated bundle holds only what it lists.
    A ValueError names a chosen dictionary the run has not indexed.
    """
    run_dir, out = Path(run_dir), Path(record_dir) / BUNDLE_DIR
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    rule = "chosen by name"
    if names is None:
        names, rule = bundle_choice(metrics)
    indexed = {folder.name: folder for folder in feature_index_folders(run_dir)}
    missing = [name for name in names if name not in indexed]
    if missing:
        raise ValueError(
            f"{run_dir / FEATURES_DIR} has no feature index of {', '.join(missing)}: run `monosemantic index "
            f"--workdir {run_dir}` first"
        )
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():
        stale.unlink()
    bundled = []
    left_out = []
    for name in names:
        index = load_feature_index(indexed[name])
        data = lzma.compress(save_arrays(compact_arrays(index.arrays)), preset=9)
        if bundled and sum(b.bytes for b in bundled) + len(data) > budget:
            left_out.append(name)
            continue
        (out / f"{name}.safetensors.xz").write_bytes(data)
        (out / f"{name}.json").write_text(json.dumps(asdict(index.meta), indent=2))
        meta = index.meta
        bundled.append(
            BundledDictionary(
                name,
                meta.weights_hash,
                meta.dict_size,
                meta.arch,
                meta.sparsity_key,
                meta.sparsity_value,
                f"{name}.safetensors.xz",
                len(data),
            )
        )
    _write_gzip(out / "vocab.json.gz", (run_dir / FEATURES_DIR / VOCAB_FILE).read_bytes())
    if metrics:
        _write_gzip(out / "metrics.json.gz", metrics_path.read_bytes())
    manifest = {
        "version": BUNDLE_VERSION,
        "chosen": rule,
        "dictionaries": [asdict(b) for b in bundled],
        "left_out": left_out,  # chosen but past the budget
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return bundled


def _write_gzip(path: Path, data: bytes) -> None:
    path.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))


def bundle_size(record_dir: Path) -> int:
    """Bytes of every file of a record's labelling bundle."""
    return sum(path.stat().st_size for path in (Path(record_dir) / BUNDLE_DIR).iterdir())


def read_manifest(record_dir: Path) -> dict:
    """A record's ``labelling/manifest.json``; a ValueError that says how to make one when it is missing."""
    path = Path(record_dir) / BUNDLE_DIR / MANIFEST
    if not path.is_file():
        raise ValueError(
            f"{record_dir} holds no labelling bundle ({BUNDLE_DIR}/{MANIFEST}): build the run and write it with "
            f"`monosemantic record --workdir RUN --out {record_dir}`"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is corrupt ({exc}): write the record again with `monosemantic record`") from exc
    if manifest.get("version") != BUNDLE_VERSION:
        raise ValueError(f"{path} is bundle version {manifest.get('version')}, this code reads {BUNDLE_VERSION}")
    return manifest


def unpack_bundle(record_dir: Path, run_dir: Path) -> list[Path]:
    """Write a record's bundle as the ``features/`` (and ``metrics.json``) of ``run_dir``; the index folders.

    An index already there with the same meta and arrays is left as it is, so ingest finds it unchanged.
    """
    source, run_dir = Path(record_dir) / BUNDLE_DIR, Path(run_dir)
    manifest = read_manifest(record_dir)
    root = run_dir / FEATURES_DIR
    root.mkdir(parents=True, exist_ok=True)
    (root / VOCAB_FILE).write_bytes(gzip.decompress((source / "vocab.json.gz").read_bytes()))
    if (source / "metrics.json.gz").is_file():
        (run_dir / "metrics.json").write_bytes(gzip.decompress((source / "metrics.json.gz").read_bytes()))
    folders = []
    for entry in manifest["dictionaries"]:
        name = entry["name"]
        meta = FeatureIndexMeta(**json.loads((source / f"{name}.json").read_text()))
        arrays = restore_arrays(load_arrays(lzma.decompress((source / entry["file"]).read_bytes())))
        folder = root / name
        folders.append(folder)
        if _same_index(folder, meta, arrays):
            continue
        save_feature_index(FeatureIndex(meta, arrays), folder)
    return folders


def _same_index(folder: Path, meta: FeatureIndexMeta, arrays: dict[str, np.ndarray]) -> bool:
    if not (folder / INDEX_META).is_file():
        return False
    try:
        current = load_feature_index(folder)
    except ValueError:
        return False
    if asdict(current.meta) != json.loads(json.dumps(asdict(meta))) or current.arrays.keys() != arrays.keys():
        return False
    return all(np.array_equal(current.arrays[k], arrays[k], equal_nan=True) for k in arrays)
