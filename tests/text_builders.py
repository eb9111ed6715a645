"""Builders the corpus, tokenizer, LM and activation tests share: the Brown sample, tiny corpora and models."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import torch

from training.data.corpus import Corpus, Document, read_brown_folder
from training.data.tokenizer import train_tokenizer
from training.experiments.pipeline import PipelineConfig
from training.lm.tinylm import TinyLM, TinyLMConfig

BROWN_SAMPLE = Path(__file__).parent / "data" / "brown"
TINY_VOCAB = 320


@cache
def brown_sample() -> Corpus:
    """The two-document Brown sample committed in tests/data/brown."""
    return read_brown_folder(BROWN_SAMPLE)


def tiny_corpus(n_docs: int = 8) -> Corpus:
    """The Brown sample's documents repeated under new ids, so a split by document has something to split."""
    base = brown_sample().documents
    docs = [
        Document(doc_id=f"{d.doc_id}-{i}", genre=d.genre, text=d.text, word_spans=d.word_spans, tags=d.tags)
        for i in range(n_docs // len(base))
        for d in base
    ]
    return Corpus(documents=docs, source="tests/data/brown x4")


@cache
def tiny_tokens(n_tokens: int = 4000) -> np.ndarray:
    """About ``n_tokens`` uint16 token ids of the Brown sample, repeated, with a small BPE."""
    text = "\n\n".join(d.text for d in brown_sample().documents)
    tokenizer = train_tokenizer([text] * 4, vocab_size=TINY_VOCAB)
    ids = tokenizer.encode(text).ids
    return np.asarray((ids * (n_tokens // len(ids) + 1))[:n_tokens], dtype=np.uint16)


def tiny_lm_config(context: int = 16, n_layers: int = 3) -> TinyLMConfig:
    """A TinyLM shape small enough for tests to train in seconds."""
    return TinyLMConfig(vocab_size=TINY_VOCAB, n_layers=n_layers, context=context)


def tiny_lm(seed: int = 0) -> TinyLM:
    """An untrained tiny LM with random weights (eval mode)."""
    torch.manual_seed(seed)
    return TinyLM(tiny_lm_config()).eval()


# The smallest pipeline that still trains, indexes and ingests real artifacts: for tests of what comes after.
SMALLEST_PIPELINE = PipelineConfig(
    name="smallest",
    vocab_size=300,
    lm_steps=10,
    lm_batch_size=8,
    dict_sizes=[16, 32],
    l1=[0.03],
    k=[],
    sae_samples=4_096,
    sae_batch_size=512,
    eval_rows=1_000,
    splice_tokens=512,
    toy_twin_samples=4_096,
    # Eight SAE steps are too few for recipe v3's relu, whose atoms start at norm 0.1: every latent would
    # end rare and no card be served. The tests on this config check flows, not the recipe (the quick
    # preset's tests run v3).
    recipe="v2",
)


def brown_jsonl(folder: Path, n_documents: int = 16) -> Path:
    """A ``corpus.jsonl`` in folder of n documents cycling through the Brown sample, for ``--corpus``."""
    texts = [doc.text for doc in brown_sample().documents]
    path = folder / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": texts[i % len(texts)]}) + "\n" for i in range(n_documents)))
    return path
