"""The reads a feature view makes on every request, as two prepared Core statements on one connection.

A feature's evidence is cached (``app.web.evidence_cache``), so what a view of it must read fresh is small:
the dictionary's identity (which names the cache entry), the feature's labels, and the ids that the
neighbouring dictionaries have now. Through the ORM those reads cost several times the page's own work;
as two Core statements built once (SQLAlchemy caches their compiled form) on a pooled connection, the
first joining the dictionary to the labels, they take tens of microseconds, which is what lets the
feature page and its JSON keep up under load.
``cached_view`` is the sequence both views run; ``queries`` runs the same statements on a session's
connection, so cached and uncached views give the same records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

from sqlalchemy import Connection, Engine, bindparam, select

from app.db.models import Dictionary, Label
from app.services.schemas import LabelOut, Neighbour


@dataclass(frozen=True)
class DictionaryHead:
    """What a feature view needs of its dictionary: the row id, display name, size and cache identity."""

    id: int
    name: str
    dict_size: int
    content_hash: str
    indexed_at: datetime


_LABEL_COLUMNS = (
    "id",
    "dictionary_hash",
    "feature_index",
    "labeller",
    "verdict",
    "description",
    "confidence",
    "top_contexts_monosemantic",
    "created_at",
)

_LABELS = (
    select(*(getattr(Label, name) for name in _LABEL_COLUMNS))
    .where(Label.dictionary_hash == bindparam("dictionary_hash"), Label.feature_index == bindparam("index"))
    .order_by(Label.created_at.desc(), Label.id.desc())
)


# The dictionary and one feature's labels in one statement: the head repeats on every label row.
_HEAD_AND_LABELS = (
    select(
        Dictionary.id,
        Dictionary.name,
        Dictionary.dict_size,
        Dictionary.content_hash,
        Dictionary.indexed_at,
        *(getattr(Label, name) for name in _LABEL_COLUMNS),
    )
    .select_from(Dictionary)
    .outerjoin(Label, (Label.dictionary_hash == Dictionary.content_hash) & (Label.feature_index == bindparam("index")))
    .where(Dictionary.id == bindparam("dictionary_id"))
    .order_by(Label.created_at.desc(), Label.id.desc())
)

_IDS_BY_HASH = select(Dictionary.content_hash, Dictionary.id).where(
    Dictionary.content_hash.in_(bindparam("hashes", expanding=True))
)
# Neighbours come from the next smaller and the next larger dictionary: two hashes at most, almost always.
_IDS_BY_TWO_HASHES = select(Dictionary.content_hash, Dictionary.id).where(
    Dictionary.content_hash.in_([bindparam("first"), bindparam("second")])
)


def head_and_labels(
    connection: Connection, dictionary_id: int, index: int
) -> tuple[DictionaryHead | None, list[LabelOut]]:
    """The dictionary with this row id (None if there is none) and every label of its feature ``index``, newest first.

    The labels are read whether or not the feature exists; a view that turns out not to need them drops them.
    """
    rows = connection.execute(_HEAD_AND_LABELS, {"dictionary_id": dictionary_id, "index": index}).all()
    if not rows:
        return None, []
    head = DictionaryHead(*rows[0][:5])
    labels = [_label_out(row[5:]) for row in rows if row[5] is not None]
    return head, labels


def feature_labels(connection: Connection, dictionary_hash: str, index: int) -> list[LabelOut]:
    """Every label of one feature, newest first."""
    rows = connection.execute(_LABELS, {"dictionary_hash": dictionary_hash, "index": index}).all()
    return [_label_out(row) for row in rows]


def _label_out(values: tuple) -> LabelOut:
    record = dict(zip(_LABEL_COLUMNS, values, strict=True))
    record["created_at"] = record["created_at"].replace(tzinfo=UTC)
    return LabelOut(**record)


def resolve_neighbours(connection: Connection, neighbours: list[Neighbour]) -> list[Neighbour]:
    """The neighbours with the ids their dictionaries have here now (None for one not indexed here)."""
    hashes = sorted({n.dictionary_hash for n in neighbours})
    if not hashes:
        ids = {}
    elif len(hashes) <= 2:  # a statement compiled once, unlike an expanding IN
        ids = dict(connection.execute(_IDS_BY_TWO_HASHES, {"first": hashes[0], "second": hashes[-1]}).all())
    else:
        ids = dict(connection.execute(_IDS_BY_HASH, {"hashes": hashes}).all())
    return [n.model_copy(update={"dictionary_id": ids.get(n.dictionary_hash)}) for n in neighbours]


class HasNeighbours(Protocol):
    """A cached view entry: whatever it holds, it names the neighbours whose ids are read fresh."""

    neighbours: list[Neighbour]


E = TypeVar("E", bound=HasNeighbours)


@dataclass(frozen=True)
class CachedView(Generic[E]):
    """A feature view's cache entry (None on a miss) with the parts read fresh for it."""

    head: DictionaryHead
    entry: E | None
    neighbours: list[Neighbour]  # with their dictionaries' ids now; empty on a miss
    labels: list[LabelOut]


def cached_view(
    engine: Engine, dictionary_id: int, index: int, find: Callable[[DictionaryHead], E | None]
) -> CachedView[E] | None:
    """The cache entry ``find`` gives for this feature's dictionary, with fresh labels and neighbour ids.

    None when there is no such dictionary. The dictionary and labels come in one statement, the
    neighbours' ids in a second, made only on a hit.
    """
    with engine.connect() as connection:
        head, labels = head_and_labels(connection, dictionary_id, index)
        if head is None:
            return None
        entry = find(head)
        neighbours = [] if entry is None else resolve_neighbours(connection, entry.neighbours)
    return CachedView(head, entry, neighbours, labels)
