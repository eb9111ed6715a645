"""A check of a caller's regular expression before it runs over the corpus: no repeat inside a repeat.

Python's regex engine backtracks, so ``(a+)+b``, ``(\\w+\\s?)*$`` or ``(x?){30}x{30}`` take time exponential
in the length of the text they fail on. A repeat of a group that itself holds a repeat of variable length is
the usual cause; it is refused here with a way out. Other slow patterns (``.{0,400}x``, overlapping
alternatives) still run, under the search's time limit (``app.services.contrast_worker``).
"""

from __future__ import annotations

import re

# The parser of the standard library's own engine, so the check sees the pattern exactly as it will run.
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parser  # type: ignore[attr-defined]
from typing import Any

_REPEATS = {sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT}
if hasattr(sre_constants, "POSSESSIVE_REPEAT"):
    _REPEATS.add(sre_constants.POSSESSIVE_REPEAT)


def nested_repeat(pattern: str) -> str | None:
    """The part of ``pattern`` that repeats a repeat (e.g. ``(a+)+``), or None when there is none.

    Raises ``re.error`` when the pattern does not compile.
    """
    parsed = sre_parser.parse(pattern)
    return _outer_repeat(parsed)


def _outer_repeat(items: Any) -> str | None:
    for op, av in items:
        if op in _REPEATS:
            low, high, body = av
            if high > 1 and _varies(body):
                return _describe(high)
            found = _outer_repeat(body)
        else:
            found = _search_children(op, av)
        if found is not None:
            return found
    return None


def _search_children(op: Any, av: Any) -> str | None:
    for child in _children(op, av):
        found = _outer_repeat(child)
        if found is not None:
            return found
    return None


def _varies(items: Any) -> bool:
    """Whether the subpattern holds a repeat whose count can vary (``+``, ``*``, ``?``, ``{m,n}``)."""
    for op, av in items:
        if op in _REPEATS:
            low, high, body = av
            if low != high or _varies(body):
                return True
        elif any(_varies(child) for child in _children(op, av)):
            return True
    return False


def _children(op: Any, av: Any) -> list[Any]:
    if op is sre_constants.SUBPATTERN:
        return [av[-1]]
    if op is sre_constants.BRANCH:
        return list(av[1])
    if op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
        return [av[1]]
    if hasattr(sre_constants, "ATOMIC_GROUP") and op is sre_constants.ATOMIC_GROUP:
        return [av]
    if op is sre_constants.GROUPREF_EXISTS:
        return [branch for branch in av[1:] if branch is not None]
    return []


def _describe(high: int) -> str:
    times = "any number of times" if high == sre_constants.MAXREPEAT else f"up to {high} times"
    return f"a group holding a repeat (such as + or *) is itself repeated {times}"


def check_pattern(pattern: str) -> str | None:
    """Why the pattern should not run over the corpus (it may backtrack exponentially), or None."""
    try:
        nested = nested_repeat(pattern)
    except re.error:
        return None  # compile errors are reported by the caller with their own message
    if nested is None:
        return None
    return (
        f"{nested}, which can take exponential time on text it almost matches: repeat a single token or a "
        "fixed-length group instead, e.g. (?:\\w+ ){0,3} becomes \\w+(?: \\w+)?(?: \\w+)?"
    )
