"""How tokens are shown on the pages: whitespace made visible, activations as one of eleven shades.

A token's text is never trusted as markup: templates render it with autoescaping on, and the context
strips built here in Python (a feature page holds about two thousand tokens, too many for one Jinja macro
call each) escape every piece with markupsafe before it is joined into markup.
"""

from __future__ import annotations

import math
from functools import lru_cache

from markupsafe import Markup, escape

from app.services.schemas import Context

SHADES = 10  # CSS classes t0 .. t10
TOKEN_HTML_CACHE_SIZE = 65_536  # distinct (token, standalone) pairs kept: a vocabulary's worth
TOKEN_HTML_CACHE_MAX_CHARS = 64  # longer texts are not cached, which bounds the cache to a few MB
_VISIBLE = {"\n": "↵", "\r": "␍", "\t": "⇥"}
# Special tokens are markers, not text: shown as one mark (in the mark style), never read as words.
# A document boundary: marked on both sides, so the next document's first word never runs into it.
_SPECIAL = {"<|endoftext|>": "⟂ end of text ⟂ "}


def token_pieces(text: str, standalone: bool = False) -> list[tuple[bool, str]]:
    """(is_whitespace_mark, text) pieces of a token: newlines and tabs become marks, as do spaces when needed.

    Inside a running context spaces stay spaces so the text reads naturally, except in a token made only
    of spaces (it would be invisible); a standalone token (a chip) shows every space as a faint dot.
    """
    if text == "":
        return [(True, "∅")]
    if text in _SPECIAL:
        return [(True, _SPECIAL[text])]
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


def token_html(text: str, standalone: bool = False) -> Markup:
    """A token's text as escaped HTML, whitespace marks wrapped in ``<span class="ws">`` (see ``token_pieces``).

    Cached: the same few thousand tokens make up every context of every feature. Long texts (the
    inspector shows pieces of whatever people type) are escaped every time, so the cache stays small.
    """
    if len(text) > TOKEN_HTML_CACHE_MAX_CHARS:
        return _escaped_token(text, standalone)
    return _cached_token(text, standalone)


def _escaped_token(text: str, standalone: bool) -> Markup:
    return Markup("").join(
        Markup('<span class="ws">{}</span>').format(piece) if is_mark else escape(piece)
        for is_mark, piece in token_pieces(text, standalone)
    )


_cached_token = lru_cache(maxsize=TOKEN_HTML_CACHE_SIZE)(_escaped_token)


@lru_cache(maxsize=TOKEN_HTML_CACHE_SIZE)
def _silent_token_span(text: str) -> str:
    """A token where the feature does not fire, as a context strip shows it (most tokens of most strips).

    A bare span: unshaded and untitled (its activation is 0), which keeps a feature page about a third
    smaller than spelling out ``class="tok t0" title="0"`` on some two thousand tokens.
    """
    return f"<span>{token_html(text)}</span>"


def context_strip_html(context: Context, max_value: float | None, show_value: bool = True) -> Markup:
    """One context window as a strip of shaded tokens (the sampled token marked ``center``), escaped.

    With ``show_value`` the strip starts with the activation of its centre token (the window's largest
    when the centre lies outside it).
    """
    activations = context.activations
    parts = ['<div class="tokens context">']
    if show_value and activations:
        value = activations[context.center] if context.center < len(activations) else max(activations)
        parts.append(f'<span class="value">{escape(format_number(value))}</span>')
    for position, (token, activation) in enumerate(zip(context.tokens, activations, strict=False)):
        # copysign: a negative zero is titled "-0", so only a positive zero takes the shared span.
        if activation == 0 and position != context.center and math.copysign(1.0, activation) > 0:
            parts.append(_silent_token_span(token))
            continue
        center = " center" if position == context.center else ""
        parts.append(
            f'<span class="tok t{shade(activation, max_value)}{center}" title="{activation:.4g}">'
            f"{token_html(token)}</span>"
        )
    parts.append("</div>")
    return Markup("".join(parts))
