"""The rules every stored label follows, whether it comes from the REST API, the labelling page or an import.

The request models (``app.services.schemas.LabelIn``) and the import records (``app.services.labels_io``)
validate through these functions, and the import checks its rows against the indexed dictionaries with
``dictionary_problems``, so a label the API would refuse cannot come in through a file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta

from app.db.models import VERDICTS, utc_now

MAX_LABELLER_CHARS = 64
MAX_DESCRIPTION_CHARS = 2000
# Clocks of two machines disagree by seconds to minutes; a label further in the future would outrank every
# later label of its labeller on that feature (the newest counts), so it is refused.
CLOCK_SKEW = timedelta(minutes=5)
# Control (Cc), format (Cf: right-to-left overrides, zero-width characters), surrogate, private-use and
# line/paragraph separator characters of the Basic Multilingual Plane (Unicode 14, Python 3.11's
# unicodedata): invisible or reordering in a name, so two labellers could look alike, a name could hide
# text, or a terminal could run an escape. Astral format characters (emoji tag sequences) are allowed: the
# rule is also the OpenAPI pattern, whose regular expressions have no portable escape past U+FFFF.
_FORBIDDEN_RANGES = (
    (0x0000, 0x001F), (0x007F, 0x009F), (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD),
    (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x180E, 0x180E), (0x200B, 0x200F), (0x2028, 0x202E),
    (0x2060, 0x2064), (0x2066, 0x206F), (0xD800, 0xF8FF), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB),
)  # fmt: skip


def _escaped(code: int) -> str:
    return f"\\u{code:04x}"


def _character_class(ranges: tuple[tuple[int, int], ...]) -> str:
    return "".join(_escaped(a) + (f"-{_escaped(b)}" if b != a else "") for a, b in ranges)


FORBIDDEN_IN_NAMES = re.compile(f"[{_character_class(_FORBIDDEN_RANGES)}]")
# The same rule for the OpenAPI document (so generated requests know it): no forbidden character, and at
# least one that is not white space. Surrogates are left out of it: JSON text cannot carry them as
# characters (app.web.json_body refuses their escapes) and ECMA regular expressions cannot name them.
_SCHEMA_CLASS = _character_class(tuple((max(a, 0xE000), b) if a == 0xD800 else (a, b) for a, b in _FORBIDDEN_RANGES))
LABELLER_PATTERN = f"^[^{_SCHEMA_CLASS}]*[^{_SCHEMA_CLASS}\\s][^{_SCHEMA_CLASS}]*$"
DESCRIPTION_PATTERN = "^[^\\u0000]*$"


def labeller_problem(name: str) -> str | None:
    """What is wrong with a labeller's name as given (white space around it is allowed), or None."""
    if len(name) > MAX_LABELLER_CHARS:
        return f"a name has at most {MAX_LABELLER_CHARS} characters (got {len(name)})"
    if (found := FORBIDDEN_IN_NAMES.search(name)) is not None:
        return (
            f"a name cannot hold control or formatting characters (found U+{ord(found.group()):04X}): "
            "use letters, digits, spaces and punctuation"
        )
    if not name.strip():
        return "give a name: it cannot be empty or only spaces"
    return None


def checked_labeller(name: str) -> str:
    """The name with surrounding white space removed; ValueError saying what to change when it breaks a rule."""
    problem = labeller_problem(name)
    if problem is not None:
        raise ValueError(problem)
    return name.strip()


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


# readings_problem as JSON Schema, for the OpenAPI document of the label body.
READINGS_SCHEMA = [
    {
        "if": {"properties": {"verdict": {"const": "monosemantic"}}, "required": ["verdict"]},
        "then": {"properties": {"top_contexts_monosemantic": {"not": {"const": False}}}},
    },
    {
        "if": {"properties": {"verdict": {"const": "too_little_evidence"}}, "required": ["verdict"]},
        "then": {"properties": {"top_contexts_monosemantic": {"type": "null"}}},
    },
]


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
