"""The contrastive feature search for the REST API and the page: patterns checked here, the search run by the
server's ``ContrastWorker`` in a child process (one at a time, under time limits), ids linked here.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Dictionary
from app.services.contrast_worker import ContrastUnavailable, ContrastWorker, corpus_text
from app.services.regex_guard import check_pattern
from app.services.schemas import ContrastIn, ContrastOut
from training.features.contrast import ContrastConfig, ContrastInputError, compile_pattern, examples_pattern

__all__ = ["ContrastUnavailable", "check_patterns", "corpus_text", "missing_for_search", "patterns_of", "run_contrast"]


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


def missing_for_search(workdir: Path) -> str | None:
    """What the run lacks for a search (its TinyLM or its tokens), as the error says it, or None."""
    if not (workdir / "lm" / "model.safetensors").exists():
        return f"{workdir} has no TinyLM (lm/): the search runs on runs built by `monosemantic run`"
    if not (workdir / "tokens" / "manifest.json").exists():
        return f"{workdir} holds no tokenized corpus: build it with `monosemantic run`"
    return None


def check_patterns(a: str, b: str) -> None:
    """ContrastInputError naming the side whose pattern is malformed or could backtrack exponentially."""
    for name, pattern in (("a", a), ("b", b)):
        if pattern.count("[[") > 1:
            raise ContrastInputError(name, "mark one target only")
        compiled = compile_pattern(name, pattern)
        problem = check_pattern(compiled.pattern)
        if problem is not None:
            raise ContrastInputError(name, problem)


def run_contrast(session: Session, workdir: Path, body: ContrastIn, worker: ContrastWorker) -> ContrastOut:
    """The search on the server's run (by ``worker``), with features linked to the indexed dictionaries' ids."""
    # A server that cannot search at all says so first, whatever the patterns.
    workdir = Path(workdir)
    missing = missing_for_search(workdir)
    if missing is not None:
        raise ContrastUnavailable(missing)
    a, b = patterns_of(body)
    check_patterns(a, b)
    data = worker.search(workdir, a, b, ContrastConfig(max_positions=body.max_positions, seed=body.seed))
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
    for name, features in data["features"].items():
        for feature in features:
            feature["dictionary_id"] = ids.get(name)
    return ContrastOut.model_validate(data)
