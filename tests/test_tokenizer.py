"""Byte-level BPE: exact round trips, punctuation apart from words, the encoded corpus on disk with tags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data.tokenizer import EOS, TokenizeConfig, load_tokenized, token_tags, tokenize_corpus, train_tokenizer

from .text_builders import TINY_VOCAB, brown_sample, tiny_corpus

TEXTS = [
    'Mr. Smith said, "Hello!" -- and left.\n\nDr. Jones (aged 40) paid $5.50; café au lait.',
    "It's the boys' dog.\tTabs\r\nand  double  spaces, ünïcödé, 日本語, emoji 🙂\n",
]


def _trained():
    return train_tokenizer(TEXTS * 20 + [d.text for d in brown_sample().documents] * 20, vocab_size=TINY_VOCAB)


def test_round_trip_is_exact() -> None:
    tokenizer = _trained()
    for text in [*TEXTS, *(d.text for d in brown_sample().documents), "unseen wörds ⊕ and Mr.X.Y"]:
        assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_punctuation_is_split_from_words() -> None:
    tokenizer = _trained()
    pieces = [tokenizer.decode([i]) for i in tokenizer.encode("Mr. Smith said, Mr. Jones.").ids]
    assert pieces[:2] == ["Mr", "."]
    assert all(not (any(c.isalpha() for c in p) and any(c in '.,;:!?()"' for c in p)) for p in pieces)


def test_token_tags_follow_word_spans() -> None:
    spans = np.array([[0, 2], [3, 8], [8, 9]])
    word_tags = np.array([5, 6, 7], dtype=np.uint16)
    offsets = np.array([[0, 2], [2, 5], [5, 8], [8, 9], [9, 10]])  # "Hi", " wo", "rld", ".", "\n"
    assert token_tags(offsets, spans, word_tags).tolist() == [5, 6, 6, 7, 0]


def test_tokenized_corpus_on_disk(tmp_path: Path) -> None:
    corpus = tiny_corpus(8)
    config = TokenizeConfig(vocab_size=TINY_VOCAB, validation_fraction=0.25, split_seed=1)
    out = tokenize_corpus(corpus, tmp_path, config, progress=False)
    assert {p.name for p in tmp_path.iterdir()} >= {
        "tokenizer.json",
        "manifest.json",
        "tags.json",
        "tokens_train.u16",
        "tokens_val.u16",
        "offsets_train.npy",
        "tags_val.u16",
    }
    assert len(out.train.doc_ids) == 6 and len(out.val.doc_ids) == 2
    eos = out.tokenizer.token_to_id(EOS)
    by_id = {d.doc_id: d for d in corpus.documents}
    for split in (out.train, out.val):
        assert split.tokens.dtype == np.uint16 and split.offsets[-1] == len(split.tokens)
        for i, doc_id in enumerate(split.doc_ids):
            ids = split.tokens[split.offsets[i] : split.offsets[i + 1]]
            assert ids[0] == eos
            assert out.tokenizer.decode(ids[1:].tolist()) == by_id[doc_id].text
            # every tagged token's text, spaces aside, lies inside a word with that tag
            doc = by_id[doc_id]
            tags = split.tags[split.offsets[i] : split.offsets[i + 1]]
            enc = out.tokenizer.encode(doc.text)
            for (start, end), tag in zip(enc.offsets, tags[1:], strict=True):
                text = doc.text[start:end]
                if tag == 0:
                    assert not text.strip()
                    continue
                lead = start + len(text) - len(text.lstrip())
                word = next(j for j, (s, e) in enumerate(doc.word_spans) if s <= lead < e)
                assert out.tag_vocab[tag] == doc.tags[word]
    again = load_tokenized(tmp_path)
    assert np.array_equal(again.train.tokens, out.train.tokens) and again.val.doc_ids == out.val.doc_ids


def test_same_settings_reuse_the_folder(tmp_path: Path) -> None:
    config = TokenizeConfig(vocab_size=TINY_VOCAB, validation_fraction=0.25)
    tokenize_corpus(tiny_corpus(8), tmp_path, config, progress=False)
    stamp = (tmp_path / "tokens_train.u16").stat().st_mtime_ns
    tokenize_corpus(tiny_corpus(8), tmp_path, config, progress=False)
    assert (tmp_path / "tokens_train.u16").stat().st_mtime_ns == stamp
    tokenize_corpus(tiny_corpus(8), tmp_path, config.model_copy(update={"split_seed": 5}), progress=False)
    assert (tmp_path / "tokens_train.u16").stat().st_mtime_ns != stamp


def test_vocab_must_fit_uint16() -> None:
    with pytest.raises(ValueError):
        TokenizeConfig(vocab_size=70_000)
