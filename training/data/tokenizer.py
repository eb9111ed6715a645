"""Byte-level BPE for the tiny LM, and the corpus encoded to token ids on disk.

Text is first cut into words, numbers, single punctuation marks (each with at most one leading space)
and runs of whitespace, then mapped to bytes, so ``Mr.`` is the two tokens ``Mr`` and ``.`` and any text
round-trips exactly. Each split is written as a uint16 memmap of token ids (``tokens_<split>.u16``) in
which every document starts with the ``<|endoftext|>`` token, the start of each document
(``offsets_<split>.npy``, one more entry than documents), the documents' ids and genres, and for tagged
corpora the POS tag id of each token (``tags_<split>.u16``, vocabulary in ``tags.json``; 0 is no tag).
``manifest.json`` names the files with the settings that made them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm import tqdm

from training.data.corpus import Corpus, Document

EOS = "<|endoftext|>"
PRETOKENIZE_PATTERN = r" ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]|\s+(?!\S)|\s+"
NO_TAG = ""
SPLITS = ("train", "val")
_ENCODE_BATCH = 64


class TokenizeConfig(BaseModel):
    """How the corpus is split and tokenised."""

    vocab_size: int = Field(4096, gt=256, le=65536, description="BPE vocabulary size, special token included")
    min_frequency: int = Field(2, ge=1, description="a pair is merged only if seen this often")
    validation_fraction: float = Field(0.05, gt=0, lt=1, description="fraction of documents held out")
    split_seed: int = Field(0, description="seed of the train/validation split by document")


@dataclass
class TokenizedSplit:
    """One split on disk: token ids, document starts, document ids and genres, and POS tag ids if any."""

    tokens: np.ndarray  # (n_tokens,) uint16, read-only memmap
    offsets: np.ndarray  # (n_documents + 1,) int64; document i is tokens[offsets[i]:offsets[i + 1]]
    doc_ids: list[str]
    genres: list[str]
    tags: np.ndarray | None  # (n_tokens,) uint16 ids into TokenizedCorpus.tag_vocab


@dataclass
class TokenizedCorpus:
    """The tokenizer and both encoded splits of a corpus, as written in ``directory``."""

    directory: Path
    tokenizer: Tokenizer
    train: TokenizedSplit
    val: TokenizedSplit
    tag_vocab: list[str] | None
    eos_id: int
    manifest: dict


def build_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE tokenizer that splits punctuation from words."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2) -> Tokenizer:
    """Byte-level BPE with ``vocab_size`` tokens (``<|endoftext|>`` is id 0) trained on ``texts``."""
    tokenizer = build_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def token_tags(token_offsets: np.ndarray, word_spans: np.ndarray, word_tags: np.ndarray) -> np.ndarray:
    """The tag id of each token: that of the first word its character span overlaps, else 0 (no tag)."""
    out = np.zeros(len(token_offsets), dtype=np.uint16)
    if len(token_offsets) == 0 or len(word_spans) == 0:
        return out
    starts, ends = token_offsets[:, 0], token_offsets[:, 1]
    word = np.searchsorted(word_spans[:, 1], starts, side="right")
    inside = word < len(word_spans)
    word = np.minimum(word, len(word_spans) - 1)
    hit = inside & (word_spans[word, 0] < ends)
    out[hit] = word_tags[word[hit]]
    return out


def write_split(
    tokenizer: Tokenizer,
    docs: list[Document],
    directory: Path,
    split: str,
    tag_index: dict[str, int] | None,
    progress: bool,
    start_id: int | None = None,
) -> dict:
    """Encode ``docs`` into the split's files; each document starts with ``start_id`` (default: EOS)."""
    eos_id = tokenizer.token_to_id(EOS) if start_id is None else start_id
    offsets = [0]
    token_file = directory / f"tokens_{split}.u16"
    tag_file = directory / f"tags_{split}.u16"
    with ExitStack() as stack:
        tok_out = stack.enter_context(token_file.open("wb"))
        tag_out = stack.enter_context(tag_file.open("wb")) if tag_index else None
        batches = range(0, len(docs), _ENCODE_BATCH)
        for begin in tqdm(batches, disable=not progress, desc=f"encode {split}", unit="batch", dynamic_ncols=True):
            batch = docs[begin : begin + _ENCODE_BATCH]
            encodings = tokenizer.encode_batch([d.text for d in batch], add_special_tokens=False)
            for doc, enc in zip(batch, encodings, strict=True):
                ids = np.asarray([eos_id, *enc.ids], dtype=np.uint16)
                tok_out.write(ids.tobytes())
                offsets.append(offsets[-1] + len(ids))
                if tag_out is not None and tag_index is not None:
                    spans = doc.word_spans if doc.word_spans is not None else np.zeros((0, 2), dtype=np.int64)
                    word_tags = np.asarray([tag_index[t] for t in doc.tags or []], dtype=np.uint16)
                    tags = token_tags(np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2), spans, word_tags)
                    tag_out.write(np.concatenate([[0], tags]).astype(np.uint16).tobytes())
    np.save(directory / f"offsets_{split}.npy", np.asarray(offsets, dtype=np.int64))
    (directory / f"documents_{split}.json").write_text(
        json.dumps({"doc_ids": [d.doc_id for d in docs], "genres": [d.genre for d in docs]})
    )
    return {
        "tokens": token_file.name,
        "offsets": f"offsets_{split}.npy",
        "documents": f"documents_{split}.json",
        "tags": tag_file.name if tag_index else None,
        "n_tokens": offsets[-1],
        "n_documents": len(docs),
        "n_words": sum(len(d.tags) if d.tags is not None else len(d.text.split()) for d in docs),
    }


def _read_u16(path: Path, n: int) -> np.ndarray:
    if n == 0:
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype=np.uint16, mode="r", shape=(n,))


def load_tokenized(directory: Path) -> TokenizedCorpus:
    """The tokenizer and memmapped splits written by ``tokenize_corpus`` in ``directory``."""
    directory = Path(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    tokenizer = Tokenizer.from_file(str(directory / manifest["tokenizer"]))
    splits = {}
    for name in SPLITS:
        entry = manifest["splits"][name]
        docs = json.loads((directory / entry["documents"]).read_text())
        splits[name] = TokenizedSplit(
            tokens=_read_u16(directory / entry["tokens"], entry["n_tokens"]),
            offsets=np.load(directory / entry["offsets"]),
            doc_ids=docs["doc_ids"],
            genres=docs["genres"],
            tags=_read_u16(directory / entry["tags"], entry["n_tokens"]) if entry["tags"] else None,
        )
    tag_vocab = json.loads((directory / manifest["tag_vocab"]).read_text()) if manifest["tag_vocab"] else None
    return TokenizedCorpus(
        directory=directory,
        tokenizer=tokenizer,
        train=splits["train"],
        val=splits["val"],
        tag_vocab=tag_vocab,
        eos_id=manifest["eos_id"],
        manifest=manifest,
    )


def corpus_fingerprint(corpus: Corpus) -> str:
    """A short hash of a corpus's document ids, genres and texts."""
    digest = hashlib.sha256()
    for doc in corpus.documents:
        for part in (doc.doc_id, doc.genre, doc.text):
            digest.update(part.encode())
            digest.update(b"\0")
    return digest.hexdigest()[:16]


def tokenize_corpus(
    corpus: Corpus, directory: Path, config: TokenizeConfig | None = None, progress: bool = True
) -> TokenizedCorpus:
    """Split ``corpus`` by document, train BPE on the train split and encode both splits into ``directory``.

    If ``directory`` already holds the output of the same corpus and settings, it is loaded instead.
    """
    config = config or TokenizeConfig()
    directory = Path(directory)
    manifest_path = directory / "manifest.json"
    fingerprint = corpus_fingerprint(corpus)
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if old.get("config") == config.model_dump() and old.get("corpus_fingerprint") == fingerprint:
            return load_tokenized(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)
    split = corpus.split(config.validation_fraction, config.split_seed)
    tokenizer = train_tokenizer((d.text for d in split.train), config.vocab_size, config.min_frequency)
    tokenizer.save(str(directory / "tokenizer.json"))
    tag_vocab = None
    tag_index = None
    if corpus.has_tags:
        tag_vocab = [NO_TAG, *sorted({t for d in corpus.documents for t in d.tags or []} - {NO_TAG})]
        if len(tag_vocab) > 65536:
            raise ValueError(f"{len(tag_vocab)} distinct tags do not fit in uint16 tag ids")
        tag_index = {t: i for i, t in enumerate(tag_vocab)}
        (directory / "tags.json").write_text(json.dumps(tag_vocab))
    manifest = {
        "corpus": corpus.source,
        "corpus_fingerprint": fingerprint,
        "config": config.model_dump(),
        "tokenizer": "tokenizer.json",
        "vocab_size": tokenizer.get_vocab_size(),
        "eos_id": tokenizer.token_to_id(EOS),
        "dtype": "uint16",
        "tag_vocab": "tags.json" if tag_vocab else None,
        "splits": {
            "train": write_split(tokenizer, split.train, directory, "train", tag_index, progress),
            "val": write_split(tokenizer, split.validation, directory, "val", tag_index, progress),
        },
    }
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return load_tokenized(directory)
