"""Contrastive feature search: which layers and which SAE features tell two sets of token positions apart?

Each set is a pattern over the run's training text with its target token marked: a regex in which
``[[...]]`` (or a named group ``target``) marks the target, or literal example strings with the target in
``[[...]]``. Every match's target is the token whose text covers the target's first character. Positions
matched by both sets are dropped from both. The positions are split once, by a seeded shuffle, into
training and held-out halves: probes are fitted and features chosen on the training half, and every AUC
reported is on the held-out half, with a 95% interval from DeLong's variance (nonparametric: it holds for
scores with many ties, such as a feature that is zero on most positions).

Per layer, a logistic probe on the MLP activations (and on the residual stream after the block), read by
running the run's TinyLM on the same context windows the harvest used, so layer ``manifest.layer``'s rows
equal the harvested ones the SAEs were trained on. Per dictionary, the single features that separate the
sets best (either direction), each with where it fires most among the sets' positions and, from the run's
feature index when it indexes the same weights, where it fires most in the whole corpus; and the best pair.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors import safe_open
from scipy.stats import rankdata
from tqdm import tqdm

from training.activations.harvest import load_activations
from training.data.tokenizer import TokenizedCorpus, load_tokenized
from training.features.index import FEATURES_DIR, INDEX_META, INDEX_WEIGHTS, display_tokens, file_hash, sae_folders
from training.lm.tinylm import TinyLM, load_lm
from training.saes import load_sae
from training.saes.base import SparseAutoencoder

TARGET_GROUP = "target"
MARKER = re.compile(r"\[\[(.+?)\]\]")
MAX_SAMPLE_MATCHES = 2_000_000


class ContrastInputError(ValueError):
    """A pattern that cannot define a set of positions; ``field`` names which set ("a" or "b")."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


class ContrastConfig(BaseModel):
    """How many positions each set keeps, the split seed, and how many features are reported per dictionary."""

    model_config = ConfigDict(extra="forbid")

    max_positions: int = Field(4000, ge=4, description="positions kept per set (a seeded sample of the matches)")
    seed: int = Field(0, ge=0, description="seed of the sample and of the train/held-out split")
    heldout_fraction: float = Field(0.5, gt=0, lt=1, description="share of each set's positions held out")
    top_features: int = Field(5, ge=1, description="single features reported per dictionary")
    pair_candidates: int = Field(6, ge=2, description="best single features (on training positions) tried in pairs")
    contexts_per_feature: int = Field(3, ge=0, description="contexts shown per feature, of each kind")


@dataclass
class Auc:
    """An AUC on held-out positions with its 95% interval."""

    value: float
    low: float
    high: float

    def flipped(self) -> Auc:
        """The AUC of the opposite score (1 - AUC), with the interval mirrored."""
        return Auc(value=1 - self.value, low=1 - self.high, high=1 - self.low)


@dataclass
class ProbeResult:
    layer: int
    site: str  # "mlp" (the MLP activations) or "resid" (the residual stream after the block)
    dim: int
    auc: Auc
    best_unit: int  # the single dimension (an MLP neuron, or a residual coordinate) that separates best
    best_unit_auc: Auc  # its held-out AUC in the direction chosen on training positions
    best_unit_more_on: str  # "a" or "b": which set it is higher on


@dataclass
class FeatureResult:
    dictionary: str
    index: int
    auc: Auc  # of the feature's activation as a score, in the direction it separates the sets
    fires_more_on: str  # "a" or "b"
    fire_rate_a: float
    fire_rate_b: float
    contexts: list[str] = field(default_factory=list)  # where it fires most among the sets' positions
    top_contexts: list[str] = field(default_factory=list)  # where it fires most in the corpus (the feature index)
    corpus_fire_count: int | None = None  # tokens of the whole training split it fires on (None: not measured)
    # Of those firings, the share at positions of the set it fires more on (its matches, not just the sample):
    # near 1 when the feature is specific to that set in the corpus, near 0 when the set is a sliver of its uses.
    corpus_precision: float | None = None


@dataclass
class PairResult:
    dictionary: str
    indices: tuple[int, int]
    auc: Auc


@dataclass
class ContrastResult:
    a: str
    b: str
    run: str  # the run directory searched, resolved
    positions_a: int  # kept (at most config.max_positions, a seeded sample of the matches)
    positions_b: int
    dropped_overlap: int
    heldout_a: int
    heldout_b: int
    harvested_layer: int | None
    probes: list[ProbeResult]
    features: dict[str, list[FeatureResult]]
    pairs: dict[str, PairResult]
    seed: int
    config: dict  # the ContrastConfig that made this result
    matched_a: int = 0  # positions the pattern matched, before the sample (overlap removed)
    matched_b: int = 0
    indexed: list[str] = field(default_factory=list)  # dictionaries whose top contexts come from a feature index

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class CorpusText:
    """The training split as one string, with each token's character start, for pattern matching."""

    text: str
    starts: np.ndarray  # (n_tokens + 1,) character offset of each token, then the end
    vocab: list[str]
    tokens: np.ndarray

    @classmethod
    def of(cls, tokenized: TokenizedCorpus) -> CorpusText:
        vocab = display_tokens(tokenized.tokenizer)
        tokens = np.asarray(tokenized.train.tokens)
        lengths = np.array([len(t) for t in vocab], dtype=np.int64)[tokens]
        starts = np.concatenate([[0], np.cumsum(lengths)])
        return cls(text="".join(vocab[t] for t in tokens.tolist()), starts=starts, vocab=vocab, tokens=tokens)

    def snippet(self, position: int, before: int = 12, after: int = 4) -> str:
        """The text around a token, with the token in ``[[...]]``."""
        lo, hi = max(0, position - before), min(len(self.tokens), position + after + 1)
        pieces = [self.vocab[t] for t in self.tokens[lo:hi].tolist()]
        pieces[position - lo] = f"[[{pieces[position - lo]}]]"
        return "".join(pieces).replace("\n", " ")


def compile_pattern(field_name: str, pattern: str) -> re.Pattern:
    """A regex with a ``target`` group, from ``[[...]]`` markers or a named group; ContrastInputError if not."""
    if not pattern or not pattern.strip():
        raise ContrastInputError(field_name, "the pattern is empty")
    source = MARKER.sub(lambda m: f"(?P<{TARGET_GROUP}>{m.group(1)})", pattern, count=1)
    try:
        compiled = re.compile(source)
    except re.error as exc:
        raise ContrastInputError(field_name, f"not a valid regular expression: {exc}") from None
    if TARGET_GROUP not in compiled.groupindex:
        raise ContrastInputError(field_name, "mark the target token with [[...]] or a named group (?P<target>...)")
    return compiled


def examples_pattern(field_name: str, examples: list[str]) -> str:
    """A regex matching any of the example strings literally, each with its target in ``[[...]]``."""
    alternatives = []
    for example in examples:
        match = MARKER.search(example)
        if match is None:
            raise ContrastInputError(field_name, f"example {example!r} has no target in [[...]]")
        before, target, after = example[: match.start()], match.group(1), example[match.end() :]
        alternatives.append(f"{re.escape(before)}[[{re.escape(target)}]]{re.escape(after)}")
    if not alternatives:
        raise ContrastInputError(field_name, "no examples given")
    return "|".join(f"(?:{a})" for a in alternatives)


def match_positions(corpus: CorpusText, field_name: str, pattern: str) -> np.ndarray:
    """Token positions of the pattern's target in the training text, ascending and unique."""
    if pattern.count("[[") > 1:
        raise ContrastInputError(field_name, "mark one target only")
    compiled = compile_pattern(field_name, pattern)
    chars = []
    for match in compiled.finditer(corpus.text):
        start = match.start(TARGET_GROUP)
        if start >= 0 and match.end(TARGET_GROUP) > start:
            chars.append(start)
        if len(chars) >= MAX_SAMPLE_MATCHES:
            break
    if not chars:
        raise ContrastInputError(field_name, "the pattern matches no token of the run's training text")
    positions = np.searchsorted(corpus.starts, np.array(chars), side="right") - 1
    return np.unique(positions)


def delong(scores: np.ndarray, is_a: np.ndarray) -> Auc:
    """The AUC of "higher score means set a" with its 95% interval from DeLong's (1988) variance.

    Each position's placement value (the share of the other set it outranks, ties counting half) comes from
    midranks; the AUC's variance is the placements' variance in a over n_a plus that in b over n_b.
    """
    scores = np.asarray(scores, dtype=np.float64)
    x, y = scores[is_a], scores[~is_a]
    n_a, n_b = len(x), len(y)
    if n_a == 0 or n_b == 0:
        raise ValueError("an AUC needs positions of both sets")
    combined = rankdata(np.concatenate([x, y]))
    outranks_b = (combined[:n_a] - rankdata(x)) / n_b
    outranked_by_a = 1 - (combined[n_a:] - rankdata(y)) / n_a
    auc = float(outranks_b.mean())
    var = 0.0
    if n_a > 1:
        var += float(outranks_b.var(ddof=1)) / n_a
    if n_b > 1:
        var += float(outranked_by_a.var(ddof=1)) / n_b
    se = math.sqrt(var)
    return Auc(value=auc, low=max(0.0, auc - 1.96 * se), high=min(1.0, auc + 1.96 * se))


def auc_columns(scores: np.ndarray, is_a: np.ndarray) -> np.ndarray:
    """Per column of scores, the AUC of "higher score means set a" (ties count half)."""
    ranks = rankdata(scores, axis=0)
    n_a, n_b = int(is_a.sum()), int((~is_a).sum())
    return (ranks[is_a].sum(axis=0) - n_a * (n_a + 1) / 2) / (n_a * n_b)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-3, steps: int = 50) -> torch.Tensor:
    """Weights (with a last bias entry) of an L2-regularised logistic regression on standardised x."""
    xb = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    w = torch.zeros(xb.shape[1], dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xb @ w, y) + l2 * w[:-1].pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach()


def probe_auc(train_x: np.ndarray, train_a: np.ndarray, test_x: np.ndarray, test_a: np.ndarray) -> Auc:
    """Held-out AUC of a logistic probe fitted on the training positions."""
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    x = torch.from_numpy((train_x - mean) / std).double()
    w = fit_logistic(x, torch.from_numpy(train_a.astype(np.float64)))
    xt = torch.from_numpy((test_x - mean) / std).double()
    scores = (torch.cat([xt, torch.ones(len(xt), 1, dtype=xt.dtype)], dim=1) @ w).numpy()
    return delong(scores, test_a)


def best_unit(values: np.ndarray, is_a: np.ndarray, train: np.ndarray) -> tuple[int, Auc, str]:
    """The one dimension of a layer that separates the sets best on training positions (either direction),
    with its held-out AUC: the baseline a dictionary's single features should beat."""
    train_auc = auc_columns(values[train], is_a[train])
    unit = int(np.argmax(np.abs(train_auc - 0.5)))
    auc = delong(values[~train, unit], is_a[~train])
    more_on_a = bool(train_auc[unit] >= 0.5)
    return unit, auc if more_on_a else auc.flipped(), "a" if more_on_a else "b"


def layer_activations(
    model: TinyLM, tokens: np.ndarray, positions: np.ndarray, progress: bool = True, batch_windows: int = 64
) -> dict[tuple[int, str], np.ndarray]:
    """Every block's MLP activations and residual stream at ``positions``, on the harvest's context windows.

    The harvest cuts the token stream into consecutive windows of the model's context from the first
    token, so running the model on the same windows reproduces the harvested rows exactly.
    """
    context = model.config.context
    order = np.argsort(positions, kind="stable")
    ordered = positions[order]
    windows = np.unique(ordered // context)
    captured: dict[tuple[int, str], torch.Tensor] = {}
    handles = []
    for layer, block in enumerate(model.blocks):
        for site, module in (("mlp", block.mlp.act), ("resid", block)):

            def keep(_module, _inputs, output, key=(layer, site)) -> None:
                captured[key] = output

            handles.append(module.register_forward_hook(keep))
    rows: dict[tuple[int, str], list[np.ndarray]] = {}
    full = windows[(windows + 1) * context <= len(tokens)]
    batches = [full[i : i + batch_windows] for i in range(0, len(full), batch_windows)]
    batches += [np.array([w]) for w in windows[(windows + 1) * context > len(tokens)]]
    model.eval()
    try:
        with torch.no_grad():
            for batch in tqdm(batches, disable=not progress, desc="contrast: LM", unit="batch"):
                starts = batch * context
                pieces = np.stack([np.asarray(tokens[s : s + context], dtype=np.int64) for s in starts.tolist()])
                model(torch.from_numpy(pieces))
                for row, start in enumerate(starts.tolist()):
                    inside = ordered[(ordered >= start) & (ordered < start + context)] - start
                    for key, values in captured.items():
                        rows.setdefault(key, []).append(values[row, inside].numpy())
    finally:
        for handle in handles:
            handle.remove()
    result = {}
    for key, chunks in rows.items():
        stacked = np.concatenate(chunks)
        result[key] = np.empty_like(stacked)
        result[key][order] = stacked
    return result


@dataclass
class IndexedFeatures:
    """What a current feature index of a dictionary gives the search: strongest positions and fire counts."""

    top_positions: np.ndarray  # features x n_top, -1 where none
    fire_count: np.ndarray  # features
    n_tokens: int  # tokens the index counted firings over


def index_of(workdir: Path, sae_folder: Path) -> IndexedFeatures | None:
    """The run's feature index of this dictionary; None when there is none or it indexes other weights."""
    folder = Path(workdir) / FEATURES_DIR / sae_folder.name
    meta_path, arrays_path = folder / INDEX_META, folder / INDEX_WEIGHTS
    if not meta_path.exists() or not arrays_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("weights_hash") != file_hash(sae_folder / "sae.safetensors"):
            return None
        with safe_open(str(arrays_path), framework="numpy") as arrays:
            return IndexedFeatures(
                arrays.get_tensor("top_positions"), arrays.get_tensor("fire_count"), int(meta["n_tokens"])
            )
    except (OSError, ValueError, KeyError):  # an unreadable index is treated as absent: contexts are extra
        return None


def streamed_fire_counts(
    sae: SparseAutoencoder, rows: np.ndarray, scale: float, features: list[int], chunk: int = 65536
) -> np.ndarray | None:
    """How many activation rows each of ``features`` fires on, read pair by pair over all rows; None for
    architectures whose latents compete (top-k), where that would need the whole encoder on every row."""
    counts = np.zeros(len(features), dtype=np.int64)
    for start in range(0, len(rows), chunk):
        x = torch.from_numpy(np.array(rows[start : start + chunk], dtype=np.float32)) * scale
        for i, feature in enumerate(features):
            with torch.no_grad():
                values = sae.encode_pairs(x, torch.full((len(x),), feature, dtype=torch.long))
            if values is None:
                return None
            counts[i] += int((values > 0).sum())
    return counts


def add_corpus_precision(features: list[FeatureResult], fire_counts: np.ndarray, matched: dict[str, int]) -> None:
    """Fill each feature's corpus fire count and precision: its firings on its set's matches (the sample's
    fire rate times the matches) over all its firings in the training split."""
    for feature, count in zip(features, fire_counts.tolist(), strict=True):
        rate = feature.fire_rate_a if feature.fires_more_on == "a" else feature.fire_rate_b
        feature.corpus_fire_count = int(count)
        feature.corpus_precision = min(1.0, rate * matched[feature.fires_more_on] / count) if count else None


def feature_results(
    name: str,
    codes: np.ndarray,
    is_a: np.ndarray,
    train: np.ndarray,
    positions: np.ndarray,
    corpus: CorpusText,
    config: ContrastConfig,
    indexed: IndexedFeatures | None = None,
) -> tuple[list[FeatureResult], PairResult | None]:
    """The best single features (chosen on training positions, AUC on held-out ones) and the best pair.

    ``indexed`` (the dictionary's feature index) gives each reported feature its strongest corpus contexts.
    """
    test = ~train
    fired = codes > 0
    active = np.flatnonzero(fired.any(axis=0))
    if len(active) == 0:
        return [], None
    train_auc = auc_columns(codes[train][:, active], is_a[train])
    strength = np.abs(train_auc - 0.5)
    chosen = active[np.argsort(-strength, kind="stable")[: max(config.top_features, config.pair_candidates)]]
    results = []
    for index in chosen[: config.top_features]:
        direction_a = train_auc[np.searchsorted(active, index)] >= 0.5
        auc = delong(codes[test, index], is_a[test])
        strongest = np.argsort(-codes[:, index], kind="stable")[: config.contexts_per_feature]
        top_contexts = []
        if indexed is not None and index < len(indexed.top_positions):
            top_contexts = [
                corpus.snippet(int(p))
                for p in indexed.top_positions[index][: config.contexts_per_feature]
                if 0 <= p < len(corpus.tokens)
            ]
        results.append(
            FeatureResult(
                dictionary=name,
                index=int(index),
                auc=auc if direction_a else auc.flipped(),
                fires_more_on="a" if direction_a else "b",
                fire_rate_a=float(fired[is_a, index].mean()),
                fire_rate_b=float(fired[~is_a, index].mean()),
                contexts=[corpus.snippet(int(positions[i])) for i in strongest if codes[i, index] > 0],
                top_contexts=top_contexts,
            )
        )
    best_pair, best_train = None, -1.0
    candidates = chosen[: config.pair_candidates]
    for i in range(len(candidates)):
        for j in range(i + 1, len(candidates)):
            pair = [int(candidates[i]), int(candidates[j])]
            x = codes[:, pair]
            train_fit = probe_auc(x[train], is_a[train], x[train], is_a[train]).value
            if train_fit > best_train:
                best_train, best_pair = train_fit, pair
    pair_result = None
    if best_pair is not None:
        x = codes[:, best_pair]
        pair_result = PairResult(
            name, (best_pair[0], best_pair[1]), probe_auc(x[train], is_a[train], x[test], is_a[test])
        )
    return results, pair_result


def contrast(
    workdir: Path,
    a: str,
    b: str,
    config: ContrastConfig | None = None,
    corpus: CorpusText | None = None,
    progress: bool = True,
    on_phase: Callable[[str], None] | None = None,
) -> ContrastResult:
    """Which layers and features of the run in ``workdir`` separate the positions of pattern ``a`` from ``b``.

    ``on_phase`` hears "a" and "b" as each pattern starts matching the text, then "search": a caller running
    this under a time limit can give the matching of the caller's patterns a limit of its own.
    """
    workdir = Path(workdir)
    corpus = corpus or CorpusText.of(load_tokenized(workdir / "tokens"))
    tell = on_phase or (lambda phase: None)
    tell("a")
    found_a = match_positions(corpus, "a", a)
    tell("b")
    found_b = match_positions(corpus, "b", b)
    tell("search")
    overlap = np.intersect1d(found_a, found_b)
    found_a, found_b = np.setdiff1d(found_a, overlap), np.setdiff1d(found_b, overlap)
    return contrast_positions(workdir, found_a, found_b, config, corpus, progress, a, b, len(overlap))


def contrast_positions(
    workdir: Path,
    found_a: np.ndarray,
    found_b: np.ndarray,
    config: ContrastConfig | None = None,
    corpus: CorpusText | None = None,
    progress: bool = True,
    a: str = "",
    b: str = "",
    dropped_overlap: int = 0,
) -> ContrastResult:
    """The search on two given sets of training-split token positions (disjoint), sampled to the config's cap.

    ``a``, ``b`` and ``dropped_overlap`` only describe where the positions came from, for the record.
    """
    config = config or ContrastConfig()
    workdir = Path(workdir)
    corpus = corpus or CorpusText.of(load_tokenized(workdir / "tokens"))
    for name, found in (("a", found_a), ("b", found_b)):
        if len(found) < 4:
            left = " after removing those both sets match" if dropped_overlap else ""
            raise ContrastInputError(name, f"only {len(found)} positions are left{left}; at least 4 are needed")
    found_a, found_b = np.unique(found_a), np.unique(found_b)
    if np.intersect1d(found_a, found_b).size or max(found_a[-1], found_b[-1]) >= len(corpus.tokens):
        raise ValueError("the two sets must be disjoint positions of the training split")
    matched_a, matched_b = len(found_a), len(found_b)
    rng = np.random.default_rng(config.seed)
    if len(found_a) > config.max_positions:
        found_a = np.sort(rng.choice(found_a, config.max_positions, replace=False))
    if len(found_b) > config.max_positions:
        found_b = np.sort(rng.choice(found_b, config.max_positions, replace=False))
    positions = np.concatenate([found_a, found_b])
    is_a = np.concatenate([np.ones(len(found_a), bool), np.zeros(len(found_b), bool)])
    train = np.zeros(len(positions), bool)
    for members in (np.flatnonzero(is_a), np.flatnonzero(~is_a)):
        shuffled = rng.permutation(members)
        n_train = min(max(int(round(len(members) * (1 - config.heldout_fraction))), 1), len(members) - 1)
        train[shuffled[:n_train]] = True

    model = load_lm(workdir / "lm")
    layers = layer_activations(model, corpus.tokens, positions, progress)
    probes = [
        ProbeResult(
            layer,
            site,
            values.shape[1],
            probe_auc(values[train], is_a[train], values[~train], is_a[~train]),
            *best_unit(values, is_a, train),
        )
        for (layer, site), values in sorted(layers.items(), key=lambda item: (item[0][1], item[0][0]))
    ]

    all_rows, manifest = load_activations(workdir / "activations", "train")
    scale = float(manifest.mean_sq_norm) ** -0.5
    rows = torch.from_numpy(layers[(manifest.layer, "mlp")]).float() * scale
    features, pairs, indexed = {}, {}, []
    for folder in tqdm(sae_folders(workdir), disable=not progress, desc="contrast: SAEs", unit="sae"):
        sae = load_sae(folder)
        if sae.config.d_in != rows.shape[1]:
            continue
        with torch.no_grad():
            codes = sae.encode(rows).numpy()
        index = index_of(workdir, folder)
        if index is not None:
            indexed.append(folder.name)
        found, pair = feature_results(folder.name, codes, is_a, train, positions, corpus, config, index)
        reported = [f.index for f in found]
        if index is not None and index.n_tokens == len(all_rows):
            counts = index.fire_count[reported]
        else:
            counts = streamed_fire_counts(sae, all_rows, scale, reported)
        if counts is not None and len(counts) == len(found):
            add_corpus_precision(found, counts, {"a": matched_a, "b": matched_b})
        features[folder.name] = found
        if pair is not None:
            pairs[folder.name] = pair
    return ContrastResult(
        a=a,
        b=b,
        run=str(workdir.resolve()),
        positions_a=len(found_a),
        positions_b=len(found_b),
        dropped_overlap=dropped_overlap,
        heldout_a=int((is_a & ~train).sum()),
        heldout_b=int((~is_a & ~train).sum()),
        harvested_layer=manifest.layer,
        probes=probes,
        features=features,
        pairs=pairs,
        seed=config.seed,
        config=config.model_dump(),
        indexed=indexed,
        matched_a=matched_a,
        matched_b=matched_b,
    )
