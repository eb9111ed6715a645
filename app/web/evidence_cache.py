"""Features' evidence, rendered as HTML or serialized as JSON, kept in bounded LRUs in process memory.

A feature's evidence (statistics, top contexts, quantile samples, histogram, top tokens, logit effects,
parts of speech) changes only when its dictionary is indexed again, so the key is the dictionary's content
hash, its ``indexed_at`` and the feature's index. What can change between two views is left out and drawn
per request: labels, and the ids of neighbouring dictionaries (another dictionary may be indexed meanwhile).
The feature page keeps its whole page with holes for those and the CSRF token (``app.web.page_shell``), the
labelling page the evidence's HTML, and ``GET /api/dictionaries/{id}/features/{index}`` its JSON body up
to the neighbours and labels, which it appends per request (``FeatureDetail`` ends with those two fields).
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from markupsafe import Markup
from pydantic import TypeAdapter

from app.services.schemas import DuplicateGroup, FeatureDetail, LabelOut, Neighbour
from app.web.page_shell import PageShell

# About 300 to 600 features of a full-sized run (20 top contexts and 50 quantile samples of 33 tokens
# render to about 100,000 characters each; a string with any non-ASCII character takes 2 bytes a character).
EVIDENCE_CACHE_BYTES = 64 * 2**20
# A full-sized feature's JSON (less neighbours and labels) is about 30 KB: this holds about 2,000 features.
DETAIL_JSON_CACHE_BYTES = 64 * 2**20
# A cached neighbour record (a pydantic model with a 64-character hash) in memory, roughly.
NEIGHBOUR_BYTES = 600
_NEIGHBOURS_JSON = TypeAdapter(list[Neighbour])
_LABELS_JSON = TypeAdapter(list[LabelOut])


class SizedEntry(Protocol):
    """What the cache stores: anything that can say how much memory it holds."""

    def size_bytes(self) -> int: ...


K = TypeVar("K", bound=Hashable)
V = TypeVar("V", bound=SizedEntry)


@dataclass(frozen=True)
class EvidenceKey:
    """What a feature's rendered evidence depends on; ``compact`` is the labelling page's shorter variant."""

    dictionary_hash: str
    indexed_at: datetime
    index: int
    compact: bool


@dataclass(frozen=True)
class FeatureEvidence:
    """One feature's evidence as HTML (already escaped), with what the page shows around it."""

    index: int
    alive: bool
    main_html: Markup  # statistics, top contexts, quantile samples
    side_html: Markup  # histogram, top tokens, logit effects, parts of speech
    neighbours: list[Neighbour]  # their dictionary ids are looked up again on every view
    evidence: str = "alive"  # "alive", "rare" or "dead"
    inspect_text: str = ""  # the text of its strongest context, for "Open in inspector"
    duplicate_group: DuplicateGroup | None = None  # its near-duplicates, shown on the labelling card

    def size_bytes(self) -> int:
        """Memory the two HTML strings take (what the cache's bound counts)."""
        return sys.getsizeof(self.main_html) + sys.getsizeof(self.side_html)


@dataclass(frozen=True)
class FeaturePageKey:
    """What a whole feature page depends on, less its per-view holes (CSRF token, neighbour links, labels)."""

    dictionary_id: int
    dictionary_name: str
    dict_size: int
    evidence: EvidenceKey


@dataclass(frozen=True)
class CachedFeaturePage:
    """A feature page rendered with holes (``app.web.page_shell``), and the neighbours whose ids fill one of them."""

    shell: PageShell
    neighbours: list[Neighbour]  # their dictionary ids are looked up again on every view

    def size_bytes(self) -> int:
        """Memory the page's fixed pieces and the neighbour records take (what the cache's bound counts)."""
        return self.shell.size_bytes() + NEIGHBOUR_BYTES * len(self.neighbours)


@dataclass(frozen=True)
class DetailKey:
    """What a feature's JSON detail (less neighbours' ids and labels) depends on.

    The row id is part of it because the cached JSON names it (``dictionary_id``).
    """

    dictionary_id: int
    dictionary_hash: str
    indexed_at: datetime
    index: int


@dataclass(frozen=True)
class FeatureDetailJSON:
    """One feature's ``FeatureDetail`` as JSON bytes up to its neighbours, and the neighbours to resolve."""

    index: int
    head: bytes  # '{"dictionary_id":..., "pos_tags":[...]' without the closing brace
    neighbours: list[Neighbour]  # their dictionary ids are looked up again on every request

    @classmethod
    def of(cls, detail: FeatureDetail) -> FeatureDetailJSON:
        """The cacheable part of ``detail``, serialized as FastAPI serializes the whole (pydantic's JSON)."""
        head = detail.model_dump_json(exclude={"neighbours", "labels"})
        return cls(index=detail.index, head=head.encode()[:-1], neighbours=detail.neighbours)

    def body(self, neighbours: list[Neighbour], labels: list[LabelOut]) -> bytes:
        """The whole response body: the cached head with these (fresh) neighbours and labels appended.

        Byte for byte what ``FeatureDetail(..., neighbours=neighbours, labels=labels).model_dump_json()``
        gives, because those are the model's last two fields.
        """
        return b"".join(
            (
                self.head,
                b',"neighbours":',
                _NEIGHBOURS_JSON.dump_json(neighbours),
                b',"labels":',
                _LABELS_JSON.dump_json(labels),
                b"}",
            )
        )

    def size_bytes(self) -> int:
        """Memory the JSON head and the neighbour records take (what the cache's bound counts)."""
        return sys.getsizeof(self.head) + NEIGHBOUR_BYTES * len(self.neighbours)


class EvidenceCache(Generic[K, V]):
    """A thread-safe LRU of evidence (HTML or JSON) holding at most ``max_bytes`` of it."""

    def __init__(self, max_bytes: int = EVIDENCE_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """The evidence stored under ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: K, evidence: V) -> None:
        """Store ``evidence``, dropping the least recently used entries past the bound (never one larger than it)."""
        size = evidence.size_bytes()
        if size > self.max_bytes:
            return
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self.bytes -= previous[1]
            self._entries[key] = (evidence, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.bytes -= dropped
