"""The reads a feature view makes on every request, as three prepared Core statements on one connection.

A feature's evidence is cached (``app.evidence_cache``), so what a view of it must read fresh is small:
the dictionary's identity (which names the cache entry), the feature's labels, and the ids that the
neighbouring dictionaries have now. Through the ORM those three reads cost several times the page's own
work; as Core statements built once (SQLAlchemy caches their compiled form) on a pooled connection they
take tens of microseconds each, which is what lets the feature page and its JSON keep up under load.
``queries`` runs the same statements on a session's connection, so both paths give the same records.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, bindparam, select

from app.db.models import Dictionary, Label
from app.schemas import LabelOut, Neighbour


@dataclass(frozen=True)
class DictionaryHead:
    """What a feature view needs of its dictionary: the row id, display name, size and cache identity."""

    id: int
    name: str
    dict_size: int
    content_hash: str
    indexed_at: datetime


_HEAD = select(
    Dictionary.id, Dictionary.name, Dictionary.dict_size, Dictionary.content_hash, Dictionary.indexed_at
).where(Dictionary.id == bindparam("dictionary_id"))

_LABELS = (
    select(
        Label.id,
        Label.dictionary_hash,
        Label.feature_index,
        Label.labeller,
        Label.verdict,
        Label.description,
        Label.confidence,
        Label.created_at,
    )
    .where(Label.dictionary_hash == bindparam("dictionary_hash"), Label.feature_index == bindparam("index"))
    .order_by(Label.created_at.desc(), Label.id.desc())
)

_IDS_BY_HASH = select(Dictionary.content_hash, Dictionary.id).where(
    Dictionary.content_hash.in_(bindparam("hashes", expanding=True))
)


def dictionary_head(connection: Connection, dictionary_id: int) -> DictionaryHead | None:
    """The dictionary with this row id, or None."""
    row = connection.execute(_HEAD, {"dictionary_id": dictionary_id}).first()
    return None if row is None else DictionaryHead(*row)


def feature_labels(connection: Connection, dictionary_hash: str, index: int) -> list[LabelOut]:
    """Every label of one feature, newest first."""
    rows = connection.execute(_LABELS, {"dictionary_hash": dictionary_hash, "index": index}).mappings()
    return [LabelOut(**{**row, "created_at": row["created_at"].replace(tzinfo=UTC)}) for row in rows]


def resolve_neighbours(connection: Connection, neighbours: list[Neighbour]) -> list[Neighbour]:
    """The neighbours with the ids their dictionaries have here now (None for one not indexed here)."""
    hashes = sorted({n.dictionary_hash for n in neighbours})
    ids = dict(connection.execute(_IDS_BY_HASH, {"hashes": hashes}).all()) if hashes else {}
    return [n.model_copy(update={"dictionary_id": ids.get(n.dictionary_hash)}) for n in neighbours]
