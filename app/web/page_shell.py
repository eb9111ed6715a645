"""A page rendered once with named holes, filled per request by joining strings.

Most of a feature page (layout, statistics, contexts, charts) changes only when its dictionary is indexed
again, while a few parts (the CSRF token, labels, neighbour links) change between views. Rendering the
template once with markers in those places and splitting on them leaves a list of fixed pieces; a view
then costs a join instead of a template render. Markers carry a random per-process key, so text inside a
page (a corpus token, say) cannot pose as one.
"""

from __future__ import annotations

import re
import secrets
import sys
from dataclasses import dataclass
from typing import Any

from jinja2 import Template
from markupsafe import Markup

_KEY = secrets.token_hex(8)
_MARKER = re.compile(rf"\x00{_KEY}:(\w+)\x00")


def slot(name: str) -> Markup:
    """The marker of hole ``name``, as markup so the template leaves it as it is."""
    return Markup(f"\x00{_KEY}:{name}\x00")


@dataclass(frozen=True)
class PageShell:
    """A rendered page as fixed UTF-8 pieces with a hole after each but the last: ``pieces[i]``, ``slots[i]``, ...

    The pieces are kept encoded, so a view encodes only what fills the holes.
    """

    pieces: tuple[bytes, ...]
    slots: tuple[str, ...]

    def fill(self, values: dict[str, str]) -> bytes:
        """The page, as UTF-8, with every hole replaced by its (already escaped) value."""
        parts = [self.pieces[0]]
        for name, piece in zip(self.slots, self.pieces[1:], strict=True):
            parts.append(values[name].encode())
            parts.append(piece)
        return b"".join(parts)

    def size_bytes(self) -> int:
        """Memory the fixed pieces take."""
        return sum(sys.getsizeof(piece) for piece in self.pieces)


def render_shell(template: Template, context: dict[str, Any]) -> PageShell:
    """Render ``template`` with ``context`` (whose holes are ``slot(name)`` values) and cut it at the holes."""
    split = _MARKER.split(template.render(context))
    return PageShell(pieces=tuple(piece.encode() for piece in split[0::2]), slots=tuple(split[1::2]))
