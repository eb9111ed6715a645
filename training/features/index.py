"""Per-feature evidence for labellers, computed in a streaming pass over a run's activations.

For one trained dictionary, ``compute_feature_index`` reads the harvested activations in chunks and gives
every feature its density, mean and max activation, top contexts, samples from activation-quantile
intervals, an activation histogram, the tokens (and POS tags) it fires on, its direct logit effects and
its nearest neighbours in the next smaller and larger dictionary of the same sweep. Memory depends on
the dictionary size, the chunk and the cap on firing entries kept between passes
(``FeatureIndexConfig.cache_entries``), never on the corpus length.

Artifacts, one folder per dictionary under ``<run>/features/<sae name>/``:
- ``feature_index.safetensors``: arrays over features (F = dict size), numpy dtypes as named:
  ``density`` f32 (F), ``mean_activation`` f32 (F, over the tokens where it fires), ``max_activation`` f32,
  ``fire_count`` i64, ``max_contribution`` f32 (max activation x the decoder atom's norm, in the units of the
  activation rows, for the evidence levels of ``training.features.evidence``); ``histogram`` i64 (F, bins), equal-width
  bins over (0, max_activation];
  ``top_positions`` i64 (F, n_top) token positions, -1 where none, ``top_values`` f32, ``top_window_ids``
  i32 (F, n_top, W) token ids with -1 outside the document, ``top_window_acts`` f16 (F, n_top, W) the
  feature's activation at each token of the window (the sampled token is at ``before``);
  ``quantile_positions``/``quantile_values``/``quantile_window_ids``/``quantile_window_acts`` the same with
  (F, n_quantiles, per_quantile) in place of (F, n_top); ``top_token_ids`` i32 (F, n_top_tokens) -1 pad,
  ``top_token_counts`` i64, ``top_token_mean`` f32; ``promoted_ids``/``suppressed_ids`` i32 (F, n_logits),
  ``promoted_values``/``suppressed_values`` f32; ``pos_counts`` i64 (F, n_tags) when the corpus has tags;
  ``neighbour_smaller_ids``/``neighbour_smaller_cos`` and ``neighbour_larger_*`` (F, n_neighbours) when that
  dictionary exists, and ``neighbour_same_*`` for the nearest other atoms of the dictionary itself;
  ``mmcs_with_larger`` f32 (F), each atom's best cosine with the next larger dictionary
  (NaN when there is none); ``duplicate_of`` i32 (F), for each alive feature the representative of its
  group of near-duplicates (``training.analysis.duplicates``, itself when it leads one), -1 for dead and
  rare features.
- ``feature_index.json``: the ``FeatureIndexMeta`` fields (which SAE, its weights hash, the neighbour
  dictionaries, the config with its evidence criteria, the activation rows' RMS norm) so a changed input is
  re-indexed and an unchanged one is skipped.
``<run>/features/vocab.json`` holds the display string of every token id and the POS tag names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from training.activations.harvest import load_activations
from training.analysis.duplicates import near_duplicate_groups
from training.analysis.metrics import cosine_matrix
from training.data.tokenizer import TokenizedCorpus, load_tokenized
from training.features.evidence import (
    DEFAULT_MIN_CONTRIBUTION,
    DEFAULT_MIN_FIRINGS,
    EvidenceCriteria,
    classify_evidence,
)
from training.features.stream import (
    Chunk,
    FiringCache,
    QuantileSampler,
    RunningTopK,
    WindowGatherer,
    encoded_chunks,
    window_positions,
)
from training.lm.tinylm import TinyLM, load_lm
from training.saes import load_sae
from training.saes.base import SparseAutoencoder

INDEX_WEIGHTS = "feature_index.safetensors"
INDEX_META = "feature_index.json"
VOCAB_FILE = "vocab.json"
FEATURES_DIR = "features"


class FeatureIndexConfig(BaseModel):
    """How much evidence is kept per feature, and how the activations are streamed."""

    n_top: int = Field(20, gt=0, description="top-activating contexts per feature")
    before: int = Field(24, ge=0, description="tokens shown before the sampled token")
    after: int = Field(8, ge=0, description="tokens shown after the sampled token")
    n_quantiles: int = Field(10, gt=0, description="equal-width activation intervals sampled from")
    per_quantile: int = Field(5, gt=0, description="samples per interval")
    hist_bins: int = Field(50, gt=0, description="bins of the activation histogram")
    n_top_tokens: int = Field(10, gt=0, description="tokens listed as those the feature fires on most")
    top_tokens_by: Literal["activation_mass", "count"] = Field(
        "activation_mass",
        description="rank a feature's top tokens by the sum of its activation on them (a frequent token it fires "
        "on weakly ranks below a rarer one it fires on strongly), or by how often it fires on them",
    )
    n_logits: int = Field(10, gt=0, description="promoted and suppressed tokens of the logit effects")
    n_neighbours: int = Field(3, gt=0, description="nearest atoms listed in each neighbouring dictionary")
    chunk_tokens: int = Field(8192, gt=0, description="activation rows per chunk (bounds memory)")
    cache_entries: int = Field(
        64_000_000,
        ge=0,
        description="firing entries of the first pass kept in memory (12 bytes each) so the later passes need not "
        "encode every row again; a dictionary that fires more often re-encodes. Does not change the index",
    )
    seed: int = Field(0, description="seed of the quantile sampling")
    min_firings: int = Field(
        DEFAULT_MIN_FIRINGS, ge=1, description="a feature firing on fewer tokens of the index corpus is rare"
    )
    min_contribution: float = Field(
        DEFAULT_MIN_CONTRIBUTION,
        ge=0,
        description="a feature whose max activation x decoder norm is below this fraction of the activation rows' "
        "RMS norm is rare",
    )

    @property
    def window(self) -> int:
        return self.before + 1 + self.after

    @property
    def evidence(self) -> EvidenceCriteria:
        """The thresholds of the dead/rare/alive levels (``training.features.evidence``)."""
        return EvidenceCriteria(self.min_firings, self.min_contribution)


# Config fields that only classify an index's arrays: changing them rewrites the meta record, not the arrays.
EVIDENCE_FIELDS = ("min_firings", "min_contribution")


@dataclass
class FeatureIndexMeta:
    """What one feature index describes and what made it (``feature_index.json``)."""

    sae_name: str
    sae_dir: str  # relative to the run directory
    weights_hash: str  # sha256 of sae.safetensors: the dictionary's identity
    arch: str
    dict_size: int
    sparsity_key: str  # "l1" or "k"
    sparsity_value: float
    layer: int | None
    site: str
    model: str
    n_tokens: int
    activations: dict  # the activation file's identity (file, weights hash of the LM, tokens fingerprint)
    config: dict
    neighbours: dict[str, dict | None] = field(default_factory=dict)  # "smaller"/"larger" -> name, hash, size
    activation_rms_norm: float | None = None  # RMS norm of the activation rows (None: indexed before it was kept)


@dataclass
class FeatureIndex:
    """The arrays of ``feature_index.safetensors`` (see the module doc) with their meta record."""

    meta: FeatureIndexMeta
    arrays: dict[str, np.ndarray]


def index_evidence(index: FeatureIndex) -> np.ndarray:
    """Every feature's evidence level ("dead", "rare", "alive") under the criteria of the index's config.

    An index made before contributions were kept (no ``max_contribution`` array) is classified by its fire
    counts alone; indexing it again adds the contribution test.
    """
    config = index.meta.config
    criteria = EvidenceCriteria(
        int(config.get("min_firings", DEFAULT_MIN_FIRINGS)),
        float(config.get("min_contribution", DEFAULT_MIN_CONTRIBUTION)),
    )
    fire_count = index.arrays["fire_count"]
    contribution = index.arrays.get("max_contribution")
    rms = index.meta.activation_rms_norm
    if contribution is None or rms is None:
        contribution, rms = np.full(fire_count.shape, np.inf), 0.0
    return classify_evidence(fire_count, contribution, rms, criteria)


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes, the content identity of a dictionary's weights."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_feature_index(index: FeatureIndex, folder: Path) -> None:
    """Write the arrays and the meta record into folder (meta last, so it marks a finished index)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INDEX_META).unlink(missing_ok=True)
    save_file({name: np.ascontiguousarray(a) for name, a in index.arrays.items()}, str(folder / INDEX_WEIGHTS))
    (folder / INDEX_META).write_text(json.dumps(asdict(index.meta), indent=2))


def load_feature_index(folder: Path) -> FeatureIndex:
    """The feature index written in folder; a ValueError naming the file if it is missing or corrupt."""
    meta_path, arrays_path = folder / INDEX_META, folder / INDEX_WEIGHTS
    if not meta_path.exists() or not arrays_path.exists():
        raise ValueError(f"{folder} holds no finished feature index ({INDEX_META} and {INDEX_WEIGHTS})")
    try:
        meta = FeatureIndexMeta(**json.loads(meta_path.read_text()))
        arrays = load_file(str(arrays_path))
    except Exception as exc:  # json, dataclass and safetensors errors all mean a corrupt index
        raise ValueError(f"feature index in {folder} is unreadable or corrupt: {exc}") from exc
    for name, shape in expected_shapes(meta).items():
        if name not in arrays:
            if name in REQUIRED_ARRAYS:
                raise ValueError(
                    f"feature index in {folder} is corrupt: it lacks the array {name}; delete it and index again"
                )
            continue
        got = arrays[name].shape
        if len(got) != len(shape) or any(e is not None and g != e for g, e in zip(got, shape, strict=True)):
            want = "x".join("*" if e is None else str(e) for e in shape)
            raise ValueError(
                f"feature index in {folder} is corrupt: {name} has shape {got}, expected {want}; "
                "delete it and index again"
            )
    return FeatureIndex(meta=meta, arrays=arrays)


REQUIRED_ARRAYS = frozenset(
    "density mean_activation max_activation fire_count histogram top_positions top_values top_window_ids "
    "top_window_acts quantile_positions quantile_values quantile_window_ids quantile_window_acts top_token_ids "
    "top_token_counts top_token_mean mmcs_with_larger".split()
)


def expected_shapes(meta: FeatureIndexMeta) -> dict[str, tuple[int | None, ...]]:
    """The shape every array of an index must have (None: any length), from its meta record and config."""
    config = FeatureIndexConfig(**meta.config)
    f, w = meta.dict_size, config.window
    top, quantiles = (f, config.n_top), (f, config.n_quantiles, config.per_quantile)
    shapes: dict[str, tuple[int | None, ...]] = {
        name: (f,)
        for name in (
            "density",
            "mean_activation",
            "max_activation",
            "max_contribution",
            "fire_count",
            "mmcs_with_larger",
            "duplicate_of",
        )
    }
    shapes |= {"histogram": (f, config.hist_bins), "top_positions": top, "top_values": top}
    shapes |= {"top_window_ids": (*top, w), "top_window_acts": (*top, w)}
    shapes |= {"quantile_positions": quantiles, "quantile_values": quantiles}
    shapes |= {"quantile_window_ids": (*quantiles, w), "quantile_window_acts": (*quantiles, w)}
    shapes |= {name: (f, None) for name in ("top_token_ids", "top_token_counts", "top_token_mean", "pos_counts")}
    for side in ("smaller", "larger", "same"):
        shapes |= {f"neighbour_{side}_ids": (f, None), f"neighbour_{side}_cos": (f, None)}
    for name in ("promoted_ids", "promoted_values", "suppressed_ids", "suppressed_values"):
        shapes[name] = (f, config.n_logits)
    return shapes


def feature_index_folders(run_dir: Path) -> list[Path]:
    """Folders of every finished feature index in a run directory, by name."""
    root = Path(run_dir) / FEATURES_DIR
    return sorted(p.parent for p in root.glob(f"*/{INDEX_META}"))


def load_vocab(run_dir: Path) -> tuple[list[str], list[str] | None]:
    """Display strings of the token ids and the POS tag names (None without tags) of a run's index."""
    data = json.loads((Path(run_dir) / FEATURES_DIR / VOCAB_FILE).read_text())
    return data["tokens"], data.get("tag_vocab")


@dataclass
class CorpusTokens:
    """The token stream the activation rows belong to: ids, document starts and POS tag ids (or None)."""

    ids: np.ndarray
    document_offsets: np.ndarray
    tags: np.ndarray | None
    n_tags: int

    @classmethod
    def train_split(cls, tokenized: TokenizedCorpus) -> CorpusTokens:
        """The training split of a tokenized run, whose tokens the harvested activation rows belong to."""
        split = tokenized.train
        return cls(
            ids=np.asarray(split.tokens),
            document_offsets=np.asarray(split.offsets),
            tags=None if split.tags is None else np.asarray(split.tags),
            n_tags=len(tokenized.tag_vocab or []),
        )


@dataclass
class Neighbour:
    """A dictionary next to this one in size, in the same sweep."""

    name: str
    weights_hash: str
    decoder: torch.Tensor


def logit_effects(
    decoder: torch.Tensor, mlp_out: torch.Tensor, final_norm_weight: torch.Tensor, unembed: torch.Tensor, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Top-n promoted and suppressed token ids and logit values of each atom along the direct path.

    Atom -> MLP output weights (d_model x d_mlp) -> final LayerNorm as a centring and its gain (the scale it
    divides by is the same for every token, so it changes no ranking) -> unembedding (vocab x d_model).
    """
    residual = decoder.double() @ mlp_out.double().T
    residual = (residual - residual.mean(dim=1, keepdim=True)) * final_norm_weight.double()
    logits = residual @ unembed.double().T
    promoted = logits.topk(n, dim=1)
    suppressed = logits.topk(n, dim=1, largest=False)
    return (
        promoted.indices.int().numpy(),
        promoted.values.float().numpy(),
        suppressed.indices.int().numpy(),
        suppressed.values.float().numpy(),
    )


def lm_direct_path(lm: TinyLM, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What ``logit_effects`` reads for a layer's MLP: output weights, final norm gain, unembedding."""
    block = lm.blocks[layer]
    return block.mlp.fc_out.weight.detach(), lm.ln_f.weight.detach(), lm.unembed.weight.detach()


def nearest_atoms(decoder: torch.Tensor, other: torch.Tensor, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For each atom, the n atoms of another dictionary with the highest cosine: (ids, cosines)."""
    cos = cosine_matrix(decoder, other)
    best = cos.topk(min(n, other.shape[0]), dim=1)
    return best.indices.int().numpy(), best.values.float().numpy()


def nearest_other_atoms(decoder: torch.Tensor, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For each atom, the n other atoms of the same dictionary with the highest cosine: (ids, cosines)."""
    cos = cosine_matrix(decoder, decoder)
    cos.fill_diagonal_(-2.0)
    best = cos.topk(min(n, max(decoder.shape[0] - 1, 1)), dim=1)
    return best.indices.int().numpy(), best.values.float().numpy()


def _add_pair_counts(
    chunk: Chunk, ids: np.ndarray, width: int, counts: torch.Tensor, sums: torch.Tensor | None = None
) -> None:
    """Add, per (feature, id of the firing token), the number of firings (and their activation sum)."""
    token_ids = torch.from_numpy(ids[chunk.positions.numpy()].astype(np.int64))
    pairs, inverse, n = torch.unique(chunk.features * width + token_ids, return_inverse=True, return_counts=True)
    counts.index_add_(0, pairs, n)
    if sums is not None:
        sums.index_add_(
            0, pairs, torch.zeros(len(pairs), dtype=torch.float64).index_add_(0, inverse, chunk.values.double())
        )


def _top_tokens(counts: torch.Tensor, sums: torch.Tensor, n: int, by: str = "activation_mass") -> dict[str, np.ndarray]:
    """Each feature's ``n`` top tokens, ranked by activation mass (sum) or count, with count and mean activation."""
    ranking = sums if by == "activation_mass" else counts.double()
    best = ranking.topk(min(n, counts.shape[1]), dim=1)
    chosen = counts.gather(1, best.indices)
    fired = chosen > 0
    mean = sums.gather(1, best.indices) / chosen.clamp_min(1)
    return {
        "top_token_ids": torch.where(fired, best.indices, -1).int().numpy(),
        "top_token_counts": chosen.numpy(),
        "top_token_mean": mean.float().numpy(),
    }


def _windows(
    prefix: str, centers: np.ndarray, corpus: CorpusTokens, config: FeatureIndexConfig
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    positions, valid = window_positions(centers, config.before, config.after, corpus.document_offsets)
    ids = np.where(valid, corpus.ids[np.where(valid, positions, 0)].astype(np.int32), -1)
    return {f"{prefix}_window_ids": ids.astype(np.int32)}, positions


def _replay_or_encode(
    cache: FiringCache,
    sae: SparseAutoencoder,
    rows: np.ndarray,
    scale: float,
    step: int,
    desc: str,
    progress: bool,
    device: torch.device | str = "cpu",
) -> Iterator[Chunk]:
    """Another pass over the firing entries: from the cache when it holds them all, else by encoding again."""
    if cache.complete:
        return cache.chunks(f"{desc} (replayed)", progress)
    return encoded_chunks(sae, rows, scale, step, desc, progress, device)


def compute_feature_index(
    sae: SparseAutoencoder,
    rows: np.ndarray,
    scale: float,
    corpus: CorpusTokens,
    vocab_size: int,
    config: FeatureIndexConfig,
    lm_direct_path: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    neighbours: dict[str, Neighbour | None] | None = None,
    progress: bool = True,
    desc: str = "",
    device: torch.device | str = "cpu",
) -> dict[str, np.ndarray]:
    """Every array of a feature index (see the module doc) for one SAE over all activation rows.

    Three streaming passes: (1) counts, sums, maxima, top activations, token and tag counts; (2) histogram
    and quantile samples, which need each feature's maximum; (3) the feature's activation at every token
    of the chosen windows. Passes 2 and 3 replay the first pass's firing entries when they fit in
    ``config.cache_entries``; otherwise pass 2 encodes again and pass 3 reads the window activations pair
    by pair where latents do not compete, else from a third encoding.
    ``lm_direct_path`` is (MLP output weight, final norm gain, unembedding). The encoding passes run on
    ``device``; the accumulators stay on the CPU.
    """
    n, f = len(rows), sae.config.dict_size
    step = config.chunk_tokens
    fire_count = torch.zeros(f, dtype=torch.int64)
    act_sum = torch.zeros(f, dtype=torch.float64)
    max_act = torch.zeros(f)
    top = RunningTopK(f, config.n_top)
    token_counts = torch.zeros(f * vocab_size, dtype=torch.int64)
    token_sums = torch.zeros(f * vocab_size, dtype=torch.float64)
    tag_counts = torch.zeros(f * corpus.n_tags, dtype=torch.int64) if corpus.tags is not None else None
    cache = FiringCache(config.cache_entries)
    for chunk in encoded_chunks(sae, rows, scale, step, f"{desc} 1/3 stats", progress, device):
        cache.add(chunk)
        fire_count += torch.bincount(chunk.features, minlength=f)
        act_sum += torch.bincount(chunk.features, weights=chunk.values.double(), minlength=f)
        max_act.scatter_reduce_(0, chunk.features, chunk.values, "amax")
        top.update(chunk)
        _add_pair_counts(chunk, corpus.ids, vocab_size, token_counts, token_sums)
        if tag_counts is not None:
            _add_pair_counts(chunk, corpus.tags, corpus.n_tags, tag_counts)

    bins = config.hist_bins
    histogram = torch.zeros(f * bins, dtype=torch.int64)
    sampler = QuantileSampler(max_act, config.n_quantiles, config.per_quantile, config.seed)
    binner = QuantileSampler(max_act, bins, 1, 0)
    for chunk in _replay_or_encode(cache, sae, rows, scale, step, f"{desc} 2/3 quantiles", progress, device):
        bin_of = binner.interval_of(chunk.features, chunk.values)
        histogram += torch.bincount(chunk.features * bins + bin_of, minlength=f * bins)
        sampler.update(chunk)

    top_positions, top_values = top.result()
    quantile_positions, quantile_values = sampler.result(f)
    arrays: dict[str, np.ndarray] = {
        "density": (fire_count.double() / max(n, 1)).float().numpy(),
        "mean_activation": (act_sum / fire_count.clamp_min(1)).float().numpy(),
        "max_activation": max_act.numpy(),
        # Rows were multiplied by scale before encoding: divide it out to compare with the rows' own norm.
        "max_contribution": (max_act * sae.W_dec.detach().norm(dim=1) / scale).float().numpy(),
        "fire_count": fire_count.numpy(),
        "histogram": histogram.view(f, bins).numpy(),
        "top_positions": top_positions,
        "top_values": top_values,
        "quantile_positions": quantile_positions,
        "quantile_values": quantile_values,
        **_top_tokens(
            token_counts.view(f, vocab_size), token_sums.view(f, vocab_size), config.n_top_tokens, config.top_tokens_by
        ),
    }
    del token_counts, token_sums
    if tag_counts is not None:
        arrays["pos_counts"] = tag_counts.view(f, corpus.n_tags).numpy()

    top_ids, top_windows = _windows("top", top_positions, corpus, config)
    quantile_ids, quantile_windows = _windows("quantile", quantile_positions, corpus, config)
    arrays |= top_ids | quantile_ids
    width = config.window
    all_windows = np.concatenate([top_windows.reshape(-1, width), quantile_windows.reshape(-1, width)])
    owners = np.concatenate(
        [np.repeat(np.arange(f), config.n_top), np.repeat(np.arange(f), config.n_quantiles * config.per_quantile)]
    )
    gatherer = WindowGatherer(all_windows, owners)
    if cache.complete or not gatherer.read_pairs(sae, rows, scale):
        for chunk in _replay_or_encode(cache, sae, rows, scale, step, f"{desc} 3/3 contexts", progress, device):
            gatherer.update(chunk)
    del cache
    acts = gatherer.result().astype(np.float16)
    split = f * config.n_top
    arrays["top_window_acts"] = acts[:split].reshape(f, config.n_top, width)
    arrays["quantile_window_acts"] = acts[split:].reshape(f, config.n_quantiles, config.per_quantile, width)

    if lm_direct_path is not None:
        promoted_ids, promoted, suppressed_ids, suppressed = logit_effects(sae.W_dec, *lm_direct_path, config.n_logits)
        arrays |= {
            "promoted_ids": promoted_ids,
            "promoted_values": promoted,
            "suppressed_ids": suppressed_ids,
            "suppressed_values": suppressed,
        }
    arrays["mmcs_with_larger"] = np.full(f, np.nan, dtype=np.float32)
    for side, neighbour in (neighbours or {}).items():
        if neighbour is None:
            continue
        if side == "same":
            ids, cos = nearest_other_atoms(sae.W_dec, config.n_neighbours)
            arrays["neighbour_same_ids"], arrays["neighbour_same_cos"] = ids, cos
            continue
        ids, cos = nearest_atoms(sae.W_dec, neighbour.decoder, config.n_neighbours)
        arrays[f"neighbour_{side}_ids"], arrays[f"neighbour_{side}_cos"] = ids, cos
        if side == "larger":
            arrays["mmcs_with_larger"] = cos[:, 0].copy()
    return arrays


def sae_folders(run_dir: Path) -> list[Path]:
    """The run's trained SAEs (``saes/saes/``) and those imported from other formats (``imported/``)."""
    patterns = ("saes/saes/*/sae.safetensors", "imported/*/sae.safetensors")
    return sorted(p.parent for pattern in patterns for p in run_dir.glob(pattern))


def _sweep_neighbours(saes: dict[Path, SparseAutoencoder]) -> dict[Path, dict[str, Path | None]]:
    """For each SAE, the next smaller and next larger dictionary with the same arch and sparsity."""
    groups: dict[tuple, list[Path]] = {}
    for folder, sae in saes.items():
        groups.setdefault((sae.config.arch, sae.config.sparsity, sae.config.tag), []).append(folder)
    result: dict[Path, dict[str, Path | None]] = {}
    for members in groups.values():
        members.sort(key=lambda p: saes[p].config.dict_size)
        for i, folder in enumerate(members):
            result[folder] = {
                "smaller": members[i - 1] if i > 0 else None,
                "larger": members[i + 1] if i + 1 < len(members) else None,
            }
    return result


def display_tokens(tokenizer) -> list[str]:
    """The text of every token id on its own, as a labeller should see it."""
    return [tokenizer.decode([i], skip_special_tokens=False) for i in range(tokenizer.get_vocab_size())]


def index_run(
    run_dir: Path,
    config: FeatureIndexConfig | None = None,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> list[Path]:
    """Index every trained SAE of a pipeline run directory into ``<run>/features/``; the index folders.

    The SAEs encode the activation rows on ``device``.
    A dictionary whose index already exists for the same weights, activations, neighbours and config is
    skipped, so an interrupted run resumes with the next unfinished dictionary.
    """
    run_dir = Path(run_dir)
    config = config or FeatureIndexConfig()
    folders = sae_folders(run_dir)
    if not folders:
        raise FileNotFoundError(
            f"{run_dir} holds no trained SAEs (saes/saes/*/sae.safetensors): run the pipeline first"
        )
    tokenized = load_tokenized(run_dir / "tokens")
    rows, manifest = load_activations(run_dir / "activations", "train")
    if manifest.shape[0] != len(tokenized.train.tokens):
        raise ValueError(
            f"{run_dir}: {manifest.shape[0]} activation rows for {len(tokenized.train.tokens)} tokens: "
            "the activations were harvested from other tokens; delete activations/ and rerun"
        )
    scale = float(manifest.mean_sq_norm) ** -0.5
    corpus = CorpusTokens.train_split(tokenized)
    out_root = run_dir / FEATURES_DIR
    out_root.mkdir(parents=True, exist_ok=True)
    vocab_path = out_root / VOCAB_FILE
    vocab = {"tokens": display_tokens(tokenized.tokenizer), "tag_vocab": tokenized.tag_vocab}
    vocab_path.write_text(json.dumps(vocab))

    direct_path = None
    if (run_dir / "lm" / "model.safetensors").exists() and manifest.site == "mlp_post" and manifest.layer is not None:
        direct_path = lm_direct_path(load_lm(run_dir / "lm"), manifest.layer)
    model_name = getattr(manifest, "model", "tinylm")
    saes = {folder: load_sae(folder) for folder in folders}
    width = int(manifest.shape[1])
    for folder, sae in saes.items():
        if sae.config.d_in != width:
            raise ValueError(
                f"{folder} was trained on {sae.config.d_in}-dimensional inputs but the activations in "
                f"{run_dir / 'activations'} have {width}: the SAEs come from another run; delete saes/ and rerun"
            )
    hashes = {folder: file_hash(folder / "sae.safetensors") for folder in folders}
    activations = {"file": manifest.file, "weights_hash": manifest.weights_hash, "tokens": manifest.tokens_fingerprint}
    written = []
    for folder, sides in _sweep_neighbours(saes).items():
        sae = saes[folder]
        neighbours = {
            side: None if other is None else Neighbour(other.name, hashes[other], saes[other].W_dec)
            for side, other in sides.items()
        }
        neighbours["same"] = Neighbour(folder.name, hashes[folder], sae.W_dec)
        meta = FeatureIndexMeta(
            sae_name=folder.name,
            sae_dir=str(folder.relative_to(run_dir)),
            weights_hash=hashes[folder],
            arch=sae.config.arch,
            dict_size=sae.config.dict_size,
            sparsity_key=sae.config.sparsity_key,
            sparsity_value=float(sae.config.sparsity),
            layer=manifest.layer,
            site=manifest.site,
            model=model_name,
            n_tokens=len(rows),
            activations=activations,
            config=config.model_dump(exclude={"cache_entries"}),
            activation_rms_norm=float(manifest.mean_sq_norm) ** 0.5,
            neighbours={
                side: None
                if n is None
                else {
                    "name": n.name,
                    "weights_hash": n.weights_hash,
                    "dict_size": sae.config.dict_size if side == "same" else saes[sides[side]].config.dict_size,
                }
                for side, n in neighbours.items()
            },
        )
        out = out_root / folder.name
        written.append(out)
        if _is_current(out, meta):
            _regroup_if_needed(out, meta, sae)
            continue
        arrays = compute_feature_index(
            sae,
            rows,
            scale,
            corpus,
            len(vocab["tokens"]),
            config,
            direct_path,
            neighbours,
            progress,
            folder.name,
            device,
        )
        arrays["duplicate_of"] = duplicate_groups(sae.W_dec, index_evidence(FeatureIndex(meta, arrays)) == "alive")
        save_feature_index(FeatureIndex(meta, arrays), out)
    return written


def _regroup_if_needed(folder: Path, meta: FeatureIndexMeta, sae: SparseAutoencoder) -> None:
    """Rewrite a current index's ``duplicate_of`` when the evidence criteria changed which features are alive.

    Reads only the three arrays it needs, so an unchanged index costs little to check.
    """
    try:
        with safe_open(str(folder / INDEX_WEIGHTS), "np") as handle:
            names = set(handle.keys())
            arrays = {n: handle.get_tensor(n) for n in ("fire_count", "max_contribution", "duplicate_of") if n in names}
    except Exception:  # a corrupt file: the full load below says so in its own words
        load_feature_index(folder)
        raise
    groups = duplicate_groups(sae.W_dec, index_evidence(FeatureIndex(meta, arrays)) == "alive")
    if np.array_equal(arrays.get("duplicate_of"), groups):
        return
    current = load_feature_index(folder)
    save_feature_index(FeatureIndex(current.meta, current.arrays | {"duplicate_of": groups}), folder)


def duplicate_groups(decoder: torch.Tensor, alive: np.ndarray) -> np.ndarray:
    """The ``duplicate_of`` array: each alive feature's group representative among the alive atoms, else -1."""
    rows = np.flatnonzero(alive)
    groups = np.full(len(alive), -1, dtype=np.int32)
    if rows.size:
        groups[rows] = rows[near_duplicate_groups(decoder.detach().cpu()[torch.from_numpy(rows)]).numpy()]
    return groups


def _is_current(folder: Path, meta: FeatureIndexMeta) -> bool:
    """Whether folder holds this index already; when only the evidence criteria changed, its meta is rewritten."""
    path = folder / INDEX_META
    if not path.exists() or not (folder / INDEX_WEIGHTS).exists():
        return False
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    wanted = json.loads(json.dumps(asdict(meta)))
    if stored == wanted:
        return True
    if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict):
        return False
    for record in (stored, wanted):
        record["config"] = {k: v for k, v in record["config"].items() if k not in EVIDENCE_FIELDS}
    if stored != wanted:
        return False
    path.write_text(json.dumps(asdict(meta), indent=2))
    return True
