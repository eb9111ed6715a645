"""Features' evidence rendered as HTML, kept in a bounded LRU in process memory so a page is drawn once.

A feature's evidence (statistics, top contexts, quantile samples, histogram, top tokens, logit effects,
parts of speech) changes only when its dictionary is indexed again, so the key is the dictionary's content
hash, its ``indexed_at`` and the feature's index. What can change between two views is left out and drawn
per request: labels, and the ids of neighbouring dictionaries (another dictionary may be indexed meanwhile).
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup

from app.schemas import Neighbour

# About 300 to 600 features of a full-sized run (20 top contexts and 50 quantile samples of 33 tokens
# render to about 100,000 characters each; a string with any non-ASCII character takes 2 bytes a character).
EVIDENCE_CACHE_BYTES = 64 * 2**20


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

    def size_bytes(self) -> int:
        """Memory the two HTML strings take (what the cache's bound counts)."""
        return sys.getsizeof(self.main_html) + sys.getsizeof(self.side_html)


class EvidenceCache:
    """A thread-safe LRU of rendered evidence holding at most ``max_bytes`` of HTML."""

    def __init__(self, max_bytes: int = EVIDENCE_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[EvidenceKey, tuple[FeatureEvidence, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: EvidenceKey) -> FeatureEvidence | None:
        """The evidence stored under ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: EvidenceKey, evidence: FeatureEvidence) -> None:
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
