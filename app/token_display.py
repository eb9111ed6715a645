"""How tokens are shown on the pages: whitespace made visible, activations as one of eleven shades.

Templates render the pieces with autoescaping on, so a token's text is never trusted as markup.
"""

from __future__ import annotations

import math

SHADES = 10  # CSS classes t0 .. t10
_VISIBLE = {"\n": "↵", "\r": "␍", "\t": "⇥"}


def token_pieces(text: str, standalone: bool = False) -> list[tuple[bool, str]]:
    """(is_whitespace_mark, text) pieces of a token: newlines and tabs become marks, as do spaces when needed.

    Inside a running context spaces stay spaces so the text reads naturally, except in a token made only
    of spaces (it would be invisible); a standalone token (a chip) shows every space as a faint dot.
    """
    if text == "":
        return [(True, "∅")]
    only_spaces = text.strip(" ") == ""
    pieces: list[tuple[bool, str]] = []
    for char in text:
        if char in _VISIBLE:
            mark, shown = True, _VISIBLE[char]
        elif char == " " and (standalone or only_spaces):
            mark, shown = True, "·"
        else:
            mark, shown = False, char
        if pieces and pieces[-1][0] == mark:
            pieces[-1] = (mark, pieces[-1][1] + shown)
        else:
            pieces.append((mark, shown))
    return pieces


def shade(value: float | None, max_value: float | None) -> int:
    """The shade class (0..10) of an activation relative to the largest one shown; any firing is at least 1."""
    if value is None or max_value is None or not math.isfinite(value) or value <= 0 or max_value <= 0:
        return 0
    return max(1, min(SHADES, round(SHADES * value / max_value)))


def format_number(value: float | None, digits: int = 3) -> str:
    """A short human form of a metric: significant digits (scientific only for tiny values), thousands grouped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"
