"""Activations of any module of a transformers model on disk, written into a run directory like the TinyLM's.

``harvest_hf`` loads a model and its fast tokenizer from a local folder, never from a hub (both loads
are local-only and ``HF_HUB_OFFLINE`` is set), encodes the corpus into ``<run>/tokens/`` in the format
of ``training.data.tokenizer`` (the model's own ``tokenizer.json``, uint16 ids, every document starting with
the tokenizer's CLS or BOS token) and harvests the chosen module's output for every training token, in
windows of the model's context, into ``<run>/activations/`` (as one worker of several: one shard of a
sharded store, see ``training.activations.store``). Windows are cut from the token stream as for the
TinyLM, so a window may begin inside a document and span several. The SAE sweep, the feature index and
the app then read the run directory as they read a TinyLM run's; there is no LM in ``<run>/lm/``, so
no CE-loss recovered and no logit effects.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, Field
from tokenizers import Tokenizer
from torch import nn

from training.activations.harvest import ActivationManifest, harvest_module, module_activations
from training.activations.store import STORE_DIR, ShardRecord, harvest_shard
from training.data.corpus import Corpus, corpus_subset, load_corpus
from training.data.tokenizer import SPLITS, TokenizedCorpus, corpus_fingerprint, load_tokenized, write_split

UINT16_IDS = 65536
GENERIC_FOLDER_NAMES = frozenset({"model", "models", "weights", "checkpoint"})
# Tokens per forward pass: attention memory grows with context squared, so few long windows at a time.
TOKENS_PER_FORWARD = 4096


class HFHarvestConfig(BaseModel):
    """Which model, module and corpus a harvest reads, and how the corpus is split."""

    model: Path = Field(..., description="local folder of a transformers model with its tokenizer")
    module: str = Field(..., description="name of the module whose output is harvested, as in named_modules()")
    name: str | None = Field(None, description="model name in manifests and the app (default: the folder's name)")
    context: int | None = Field(None, gt=1, description="tokens per window (default: the model's max context)")
    max_documents: int | None = Field(None, gt=0, description="use only the first N documents of the corpus")
    validation_fraction: float = Field(0.05, gt=0, lt=1, description="fraction of documents held out")
    split_seed: int = Field(0, description="seed of the train/validation split by document")


@dataclass
class LoadedModel:
    """A transformers model in eval mode with its tokenizer and what names it."""

    model: nn.Module
    tokenizer: Tokenizer  # the fast tokenizer's backend, without padding or truncation
    name: str
    config_hash: str
    context: int


def model_name(path: Path) -> str:
    """The folder's name, or its parent's when the folder has a generic name such as ``model``."""
    path = Path(path).resolve()
    return path.parent.name if path.name.lower() in GENERIC_FOLDER_NAMES else path.name


def load_hf_model(
    path: Path, name: str | None = None, context: int | None = None, progress: bool = True
) -> LoadedModel:
    """Load ``AutoModel`` and its fast tokenizer from the local folder ``path`` (no network is ever used)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"model folder {path} holds no config.json: pass --model a local folder with a transformers model "
            "(config.json, weights and tokenizer files)"
        )
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from transformers import AutoModel, AutoTokenizer  # heavy: imported only when a model is harvested
    from transformers.utils import logging as hf_logging

    if not progress:
        hf_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(path, local_files_only=True)
        hf_tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"cannot load a transformers model from {path}: {' '.join(str(exc).split())}") from exc
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"the tokenizer of {path} is not a fast tokenizer (no tokenizer.json): convert it first")
    tokenizer = Tokenizer.from_str(backend.to_str())
    tokenizer.no_padding()
    tokenizer.no_truncation()
    if tokenizer.get_vocab_size() > UINT16_IDS:
        raise ValueError(
            f"the tokenizer of {path} has {tokenizer.get_vocab_size()} tokens: run directories store token ids "
            f"as uint16, so at most {UINT16_IDS}"
        )
    longest = model_context(model, hf_tokenizer)
    if context is not None and context > longest:
        raise ValueError(
            f"--context {context} exceeds the {longest} tokens the model at {path} reads: pass at most that"
        )
    config_text = (path / "config.json").read_bytes()
    return LoadedModel(
        model=model.eval(),
        tokenizer=tokenizer,
        name=name or model_name(path),
        config_hash=hashlib.sha256(config_text).hexdigest()[:16],
        context=context or longest,
    )


def model_context(model: nn.Module, hf_tokenizer) -> int:
    """The longest input the model reads: its position table's size, or the tokenizer's limit, else 512."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 1:
            # some models reserve positions (RoBERTa's padding offset): stay within the tokenizer's limit too
            limit = getattr(hf_tokenizer, "model_max_length", value)
            return min(value, limit) if isinstance(limit, int) and limit > 1 else value
    limit = getattr(hf_tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 1 < limit < 1_000_000 else 512


def module_names(model: nn.Module) -> list[str]:
    """Names of every submodule, as ``named_modules()`` gives them (the root, "", left out)."""
    return [name for name, _ in model.named_modules() if name]


def check_module(model: nn.Module, module: str) -> None:
    """Raise ValueError listing the model's module names (numbers shown as N) when ``module`` is not one."""
    names = module_names(model)
    if module in names:
        return
    patterns = list(dict.fromkeys(re.sub(r"(?<=\.)\d+(?=\.|$)", "N", n) for n in names))
    example = next((n for n in names if re.search(r"\.\d+\.", n)), names[0] if names else "")
    raise ValueError(
        f"module {module!r} is not in the model: choose --module from {', '.join(patterns)} "
        f"(N is a block number, e.g. {example})"
    )


def check_per_token_output(model: nn.Module, module: str, tokens: np.ndarray) -> None:
    """Raise ValueError unless ``module`` gives one vector per token (batch x tokens x dim) on a short input."""
    probe = torch.from_numpy(np.asarray(tokens[:8], dtype=np.int64))[None]
    try:
        out = module_activations(model, module, probe)
    except RuntimeError as exc:
        raise ValueError(f"module {module} cannot be harvested: {exc}") from exc
    if not isinstance(out, torch.Tensor) or out.dim() != 3 or tuple(out.shape[:2]) != tuple(probe.shape):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"module {module} gives {shape} for {probe.shape[1]} tokens, not one vector per token: "
            "choose a module inside a block, e.g. an MLP's activation"
        )


def layer_of(module: str) -> int | None:
    """The first block number in a module name (``encoder.layer.2.intermediate`` -> 2), or None."""
    match = re.search(r"(?:^|\.)(\d+)(?:\.|$)", module)
    return int(match.group(1)) if match else None


def document_start_id(tokenizer: Tokenizer) -> int:
    """The id that starts every document: the CLS, BOS or end-of-text token, whichever the vocabulary has."""
    for token in ("[CLS]", "<s>", "<|begin_of_text|>", "<|endoftext|>", "<bos>", "</s>", "[SEP]"):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    raise ValueError("the tokenizer has no CLS, BOS or end-of-text token to start documents with")


def _tokens_record(tokenizer: Tokenizer, config: HFHarvestConfig, model: str) -> dict:
    return {
        "tokenizer": model,
        "tokenizer_hash": hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:16],
        "validation_fraction": config.validation_fraction,
        "split_seed": config.split_seed,
        "max_documents": config.max_documents,
    }


def tokenize_for_model(
    corpus: Corpus, loaded: LoadedModel, directory: Path, config: HFHarvestConfig, progress: bool = True
) -> TokenizedCorpus:
    """Encode ``corpus`` with the model's tokenizer into ``directory`` (the ``tokens/`` format); reuse it if done.

    The folder is built under a temporary name and renamed into place, so harvest workers started at
    once in the same run directory never see each other's half-written files.
    """
    directory = Path(directory)
    fingerprint = corpus_fingerprint(corpus)
    record = _tokens_record(loaded.tokenizer, config, loaded.name)
    if _tokens_current(directory, record, fingerprint):
        return load_tokenized(directory)
    tmp = directory.with_name(f"{directory.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    loaded.tokenizer.save(str(tmp / "tokenizer.json"))
    split = corpus.split(config.validation_fraction, config.split_seed)
    tag_vocab = None
    tag_index = None
    if corpus.has_tags:
        tag_vocab = ["", *sorted({t for d in corpus.documents for t in d.tags or []} - {""})]
        tag_index = {t: i for i, t in enumerate(tag_vocab)}
        (tmp / "tags.json").write_text(json.dumps(tag_vocab))
    start_id = document_start_id(loaded.tokenizer)
    splits = {
        name: write_split(loaded.tokenizer, docs, tmp, name, tag_index, progress, start_id)
        for name, docs in zip(SPLITS, (split.train, split.validation), strict=True)
    }
    manifest = {
        "model_path": str(Path(config.model).resolve()),  # where a reader (e.g. the app) can load the model
        "corpus": corpus.source,
        "corpus_fingerprint": fingerprint,
        "config": record,
        "tokenizer": "tokenizer.json",
        "vocab_size": loaded.tokenizer.get_vocab_size(),
        "eos_id": start_id,
        "dtype": "uint16",
        "tag_vocab": "tags.json" if tag_vocab else None,
        "splits": splits,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if directory.exists() and not _tokens_current(directory, record, fingerprint):
        shutil.rmtree(directory, ignore_errors=True)  # another corpus or tokenizer: replaced
    try:
        tmp.rename(directory)
    except OSError:  # another worker put the same tokens in place first
        shutil.rmtree(tmp, ignore_errors=True)
    return load_tokenized(directory)


def _tokens_current(directory: Path, record: dict, fingerprint: str) -> bool:
    path = directory / "manifest.json"
    if not path.exists():
        return False
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    return old.get("config") == record and old.get("corpus_fingerprint") == fingerprint


def harvest_hf(
    config: HFHarvestConfig,
    workdir: Path,
    corpus: Corpus | Path | None = None,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> ActivationManifest | ShardRecord:
    """Tokenize the corpus and harvest ``config.module`` for every training token into ``workdir``.

    ``corpus`` is a Corpus, a path (.txt, folder of .txt, .jsonl) or None for the Brown corpus. With
    ``shard=(i, n)`` only shard i of n is harvested into ``activations/train_shards/`` (its ShardRecord
    is returned); otherwise the whole stream goes to ``activations/activations_train.f32``.
    """
    workdir = Path(workdir)
    loaded = load_hf_model(config.model, config.name, config.context, progress)
    check_module(loaded.model, config.module)
    if not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus)
    tokenized = tokenize_for_model(
        corpus_subset(corpus, config.max_documents), loaded, workdir / "tokens", config, progress
    )
    tokens = tokenized.train.tokens
    check_per_token_output(loaded.model, config.module, tokens)
    identity = {
        "layer": layer_of(config.module),
        "site": config.module,
        "model_config_hash": loaded.config_hash,
        "model": loaded.name,
    }
    chunk_contexts = max(1, TOKENS_PER_FORWARD // loaded.context)
    activations = workdir / "activations"
    if shard is not None:
        index, count = shard
        return harvest_shard(
            loaded.model,
            config.module,
            tokens,
            activations / STORE_DIR,
            index,
            count,
            loaded.context,
            chunk_contexts,
            identity,
            progress,
        )
    return harvest_module(
        loaded.model,
        config.module,
        tokens,
        activations,
        "train",
        loaded.context,
        chunk_contexts,
        identity,
        progress,
        device,
    )
