"""The contrastive feature search for the REST API and the page: one call, the run's text read once."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Dictionary
from app.services.schemas import ContrastIn, ContrastOut
from training.data.tokenizer import load_tokenized
from training.features.contrast import ContrastConfig, ContrastInputError, CorpusText, contrast, examples_pattern


class ContrastUnavailable(RuntimeError):
    """The server's run lacks what the search reads (tokens, LM, activations)."""


@lru_cache(maxsize=2)
def _corpus_text(tokens_dir: str, stamp: float) -> CorpusText:
    return CorpusText.of(load_tokenized(Path(tokens_dir)))


def corpus_text(workdir: Path) -> CorpusText:
    """The run's training text with token offsets, kept between requests until its tokens change."""
    tokens = Path(workdir) / "tokens"
    manifest = tokens / "manifest.json"
    if not manifest.exists():
        raise ContrastUnavailable(f"{workdir} holds no tokenized corpus: build it with `monosemantic run`")
    return _corpus_text(str(tokens.resolve()), manifest.stat().st_mtime)


def patterns_of(body: ContrastIn) -> tuple[str, str]:
    """Each side's regex, from its pattern or its examples; ContrastInputError naming the side otherwise."""
    sides = []
    for name, pattern, examples in (("a", body.a, body.a_examples), ("b", body.b, body.b_examples)):
        if pattern and examples:
            raise ContrastInputError(name, f"give {name} or {name}_examples, not both")
        if examples:
            sides.append(examples_pattern(f"{name}_examples", examples))
        elif pattern:
            sides.append(pattern)
        else:
            raise ContrastInputError(name, f"give a pattern ({name}) or examples ({name}_examples)")
    return sides[0], sides[1]


def run_contrast(session: Session, workdir: Path, body: ContrastIn) -> ContrastOut:
    """The search on the server's run, with features linked to the indexed dictionaries' ids."""
    a, b = patterns_of(body)
    workdir = Path(workdir)
    if not (workdir / "lm" / "model.safetensors").exists():
        raise ContrastUnavailable(f"{workdir} has no TinyLM (lm/): the search runs on runs built by `monosemantic run`")
    result = contrast(
        workdir,
        a,
        b,
        ContrastConfig(max_positions=body.max_positions, seed=body.seed),
        corpus=corpus_text(workdir),
        progress=False,
    )
    ids = dict(
        session.execute(
            select(Dictionary.name, Dictionary.id).where(Dictionary.run_dir == str(workdir.resolve()))
        ).all()
    )
    # A database indexed from the run under another path (a copy, a mount) still links a name it holds once.
    named: dict[str, list[int]] = {}
    for name, dictionary_id in session.execute(select(Dictionary.name, Dictionary.id)).all():
        named.setdefault(name, []).append(dictionary_id)
    ids = {name: only[0] for name, only in named.items() if len(only) == 1} | ids
    data = result.to_json()
    for name, features in data["features"].items():
        for feature in features:
            feature["dictionary_id"] = ids.get(name)
    return ContrastOut.model_validate(data)
