"""The rules every stored label follows, whether it comes from the REST API, the labelling page or an import.

The request models (``app.services.schemas.LabelIn``) and the import records (``app.services.labels_io``)
validate through these functions, and the import checks its rows against the indexed dictionaries with
``dictionary_problems``, so a label the API would refuse cannot come in through a file.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from datetime import datetime, timedelta

from app.db.models import VERDICTS, utc_now

MAX_LABELLER_CHARS = 64
MAX_DESCRIPTION_CHARS = 2000
# Clocks of two machines disagree by seconds to minutes; a label further in the future would outrank every
# later label of its labeller on that feature (the newest counts), so it is refused.
CLOCK_SKEW = timedelta(minutes=5)
# Control, format (right-to-left overrides, zero-width characters), surrogate, private-use and line/paragraph
# separators: invisible or reordering in a name, so two labellers could look alike or a name could hide text.
FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}


def labeller_problem(name: str) -> str | None:
    """What is wrong with a labeller's name (already stripped of surrounding white space), or None."""
    if not name:
        return "give a name: it cannot be empty or only spaces"
    if len(name) > MAX_LABELLER_CHARS:
        return f"a name has at most {MAX_LABELLER_CHARS} characters (got {len(name)})"
    for char in name:
        if unicodedata.category(char) in FORBIDDEN_CATEGORIES:
            return (
                f"a name cannot hold control or formatting characters (found U+{ord(char):04X}): "
                "use letters, digits, spaces and punctuation"
            )
    return None


def checked_labeller(name: str) -> str:
    """The name with surrounding white space removed; ValueError saying what to change when it breaks a rule."""
    stripped = name.strip()
    problem = labeller_problem(stripped)
    if problem is not None:
        raise ValueError(problem)
    return stripped


def checked_description(text: str) -> str:
    """The description as given; ValueError when it holds a NUL character (no database can store one)."""
    if "\x00" in text:
        raise ValueError("a description cannot hold the NUL character (\\u0000): remove it")
    return text


def readings_problem(verdict: str, top_contexts_monosemantic: bool | None) -> str | None:
    """What contradicts between the verdict and the looser top-contexts reading, or None."""
    if verdict not in VERDICTS:
        return f"verdict must be one of {', '.join(VERDICTS)}"
    if verdict == "monosemantic" and top_contexts_monosemantic is False:
        return "top_contexts_monosemantic: false contradicts the verdict monosemantic, which covers the top contexts"
    if verdict == "too_little_evidence" and top_contexts_monosemantic is not None:
        return "top_contexts_monosemantic: leave it null with the verdict too_little_evidence"
    return None


def created_at_problem(created_at: datetime, now: datetime | None = None) -> str | None:
    """Why a label's time (naive UTC) cannot be stored, or None: it may not lie in the future."""
    now = now or utc_now()
    if created_at > now + CLOCK_SKEW:
        return (
            f"created_at {created_at.isoformat()} is in the future (now {now.replace(microsecond=0).isoformat()} "
            "UTC): a future label would outrank every later one; give the time it was made"
        )
    return None


def feature_problem(dictionary_hash: str, index: int, sizes: Mapping[str, int]) -> tuple[str, str] | None:
    """(field, problem) when the dictionary is not indexed here or has no feature ``index``; None when both exist."""
    size = sizes.get(dictionary_hash)
    if size is None:
        return (
            "dictionary",
            f"no indexed dictionary has the hash {dictionary_hash[:64]}: index the run that trained it "
            "(`monosemantic index`) before importing its labels",
        )
    if index >= size:
        return "index", f"the dictionary has {size} features, so index runs from 0 to {size - 1} (got {index})"
    return None
