"""Streaming statistics of SAE latents over a long activation file, in bounded memory.

Each pass reads the activation rows in chunks, encodes them and folds the chunk into running per-feature
accumulators that merge exactly: counts and sums add, maxima take the max, top-k keeps the k best of the
running and the chunk's best, and quantile samples keep, per (feature, interval), the entries with the
smallest random keys, which is a uniform sample without replacement of everything seen so far.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm import tqdm

from training.runtime.device import moved_copy
from training.saes.base import SparseAutoencoder


@dataclass
class Chunk:
    """The firing latent codes of activation rows start .. start + n_rows, as (row, feature, value) entries.

    Entries are row-major with features ascending, so ``row * n_features + feature`` is sorted.
    """

    start: int
    n_rows: int
    n_features: int
    rows: torch.Tensor  # row within the chunk, int64
    features: torch.Tensor  # latent index, int64
    values: torch.Tensor  # activation, float32

    @property
    def positions(self) -> torch.Tensor:
        """Row positions (in the whole activation file) of the firing entries."""
        return self.rows + self.start

    def lookup(self, rows: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The activation of each (row within the chunk, feature) pair; 0 where it does not fire."""
        if not len(self.values):
            return torch.zeros(len(rows))
        keys = self.rows * self.n_features + self.features
        wanted = rows * self.n_features + features
        at = torch.searchsorted(keys, wanted).clamp_(max=len(keys) - 1)
        return torch.where(keys[at] == wanted, self.values[at], 0.0)


def encoded_chunks(
    sae: SparseAutoencoder,
    rows: np.ndarray,
    scale: float,
    chunk_rows: int,
    desc: str = "",
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> Iterator[Chunk]:
    """The SAE's firing codes for consecutive chunks of rows (rows multiplied by scale first, as in training).

    On a CUDA ``device`` a copy of the SAE encodes there and only the firing entries come back.
    """
    n, n_features = len(rows), sae.config.dict_size
    device = torch.device(device)
    on_cpu = device.type == "cpu"
    encoder = moved_copy(sae, device)
    with torch.no_grad(), tqdm(total=n, desc=desc, unit="tok", unit_scale=True, disable=not progress) as bar:
        for start in range(0, n, chunk_rows):
            x = torch.from_numpy(np.array(rows[start : start + chunk_rows], dtype=np.float32))
            if not on_cpu:
                x = x.pin_memory().to(device, non_blocking=True)
            firing = encoder.firing(x.mul_(scale))
            yield Chunk(start, x.shape[0], n_features, *(t if on_cpu else t.cpu() for t in firing))
            bar.update(x.shape[0])


class FiringCache:
    """The chunks of one encoding pass, kept compactly (12 bytes per firing entry) up to ``max_entries``.

    Later passes over the same SAE replay them instead of encoding every row again. Once the cap is passed
    the cache empties itself and ``complete`` turns False, so memory stays bounded whatever the corpus.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.entries = 0
        self.complete = max_entries > 0
        self._chunks: list[Chunk] = []  # rows and features stored as int32

    def add(self, chunk: Chunk) -> None:
        """Keep a chunk while the cap allows."""
        if not self.complete:
            return
        self.entries += len(chunk.values)
        if self.entries > self.max_entries:
            self.complete, self._chunks = False, []
            return
        self._chunks.append(replace(chunk, rows=chunk.rows.int(), features=chunk.features.int()))

    def chunks(self, desc: str = "", progress: bool = True) -> Iterator[Chunk]:
        """The kept chunks, in the order they were added."""
        total = sum(chunk.n_rows for chunk in self._chunks)
        with tqdm(total=total, desc=desc, unit="tok", unit_scale=True, disable=not progress) as bar:
            for chunk in self._chunks:
                yield replace(chunk, rows=chunk.rows.long(), features=chunk.features.long())
                bar.update(chunk.n_rows)


def first_per_group(groups: torch.Tensor, keys: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the n entries with the smallest keys in every group, grouped and in key order; their ranks."""
    by_key = torch.argsort(keys, stable=True)
    order = by_key[torch.argsort(groups[by_key], stable=True)]
    sorted_groups = groups[order]
    rank = torch.arange(len(order)) - torch.searchsorted(sorted_groups, sorted_groups)
    keep = rank < n
    return order[keep], rank[keep]


class GroupedSmallest:
    """Per group, the n entries with the smallest keys seen so far, with their row positions and values.

    Each group's n-th smallest key is kept as a cut-off, so after the first chunks almost every new entry
    is dropped by one comparison before any sorting.
    """

    def __init__(self, n_groups: int, n: int) -> None:
        self.n_groups, self.n = n_groups, n
        self.cutoff = torch.full((n_groups,), torch.inf, dtype=torch.float64)
        self.groups = torch.zeros(0, dtype=torch.int64)
        self.keys = torch.zeros(0, dtype=torch.float64)
        self.positions = torch.zeros(0, dtype=torch.int64)
        self.values = torch.zeros(0)

    def update(self, groups: torch.Tensor, keys: torch.Tensor, positions: torch.Tensor, values: torch.Tensor) -> None:
        """Offer entries; those that beat their group's cut-off are merged in."""
        entering = keys < self.cutoff[groups]
        if not entering.any():
            return
        groups = torch.cat([self.groups, groups[entering]])
        keys = torch.cat([self.keys, keys[entering]])
        positions = torch.cat([self.positions, positions[entering]])
        values = torch.cat([self.values, values[entering]])
        keep, rank = first_per_group(groups, keys, self.n)
        self.groups, self.keys = groups[keep], keys[keep]
        self.positions, self.values = positions[keep], values[keep]
        full = rank == self.n - 1
        self.cutoff[self.groups[full]] = self.keys[full]

    def table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions, values), each groups x n in key order; position -1 and value 0 where empty."""
        positions = torch.full((self.n_groups, self.n), -1, dtype=torch.int64)
        values = torch.zeros(self.n_groups, self.n)
        slot = torch.arange(len(self.groups)) - torch.searchsorted(self.groups, self.groups)
        positions[self.groups, slot] = self.positions
        values[self.groups, slot] = self.values
        return positions, values


class RunningTopK:
    """The k largest values per feature over all rows seen, with the row positions they came from."""

    def __init__(self, n_features: int, k: int) -> None:
        self.best = GroupedSmallest(n_features, k)

    def update(self, chunk: Chunk) -> None:
        """Fold in one chunk's firing entries."""
        self.best.update(chunk.features, -chunk.values.double(), chunk.positions, chunk.values)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions, values), each features x k, best first; position -1 where the feature never fired."""
        positions, values = self.best.table()
        return positions.numpy(), values.numpy()


class QuantileSampler:
    """Up to ``per_interval`` uniformly sampled firing positions per (feature, activation interval).

    The intervals split (0, max_activation] of each feature into ``n_intervals`` equal widths. Every firing
    entry gets a random key from a generator seeded by (seed, chunk start), so the sample is reproducible;
    keeping the smallest keys per interval makes merging chunks exact.
    """

    def __init__(self, max_activation: torch.Tensor, n_intervals: int, per_interval: int, seed: int) -> None:
        self.max_activation = max_activation.clamp_min(1e-30)
        self.n_intervals = n_intervals
        self.per_interval = per_interval
        self.seed = seed
        self.sample = GroupedSmallest(len(max_activation) * n_intervals, per_interval)

    def interval_of(self, features: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Interval index (0 .. n_intervals - 1) of each (feature, value) pair."""
        scaled = values / self.max_activation[features] * self.n_intervals
        return scaled.ceil().long().sub_(1).clamp_(0, self.n_intervals - 1)

    def update(self, chunk: Chunk) -> None:
        """Fold in the firing entries of one chunk."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + chunk.start)
        groups = chunk.features * self.n_intervals + self.interval_of(chunk.features, chunk.values)
        keys = torch.rand(len(chunk.values), generator=generator, dtype=torch.float64)
        self.sample.update(groups, keys, chunk.positions, chunk.values)

    def result(self, n_features: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions, values), each features x intervals x per_interval; position -1 where empty."""
        positions, values = self.sample.table()
        shape = (n_features, self.n_intervals, self.per_interval)
        return positions.view(shape).numpy(), values.view(shape).numpy()


def window_positions(
    centers: np.ndarray, before: int, after: int, document_offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Token positions of the window around every center (centers.shape + (window,)), -1 outside its document.

    Centers of -1 give all -1 windows.
    """
    offsets = np.arange(-before, after + 1)
    flat = centers.reshape(-1)
    doc = np.searchsorted(document_offsets, flat, side="right") - 1
    doc = np.clip(doc, 0, len(document_offsets) - 2)
    lo, hi = document_offsets[doc], document_offsets[doc + 1]
    positions = flat[:, None] + offsets[None, :]
    valid = (flat[:, None] >= 0) & (positions >= lo[:, None]) & (positions < hi[:, None])
    positions = np.where(valid, positions, -1)
    return positions.reshape(*centers.shape, len(offsets)), valid.reshape(*centers.shape, len(offsets))


class WindowGatherer:
    """The activation of one feature at every token of many windows, gathered chunk by chunk.

    ``positions`` (n_windows x window, -1 for none) and ``features`` (n_windows) name what to gather; every
    needed (position, feature) pair is read from the chunk that holds its row.
    """

    def __init__(self, positions: np.ndarray, features: np.ndarray) -> None:
        self.shape = positions.shape
        flat = positions.reshape(-1)
        slots = np.flatnonzero(flat >= 0)
        order = np.argsort(flat[slots], kind="stable")
        self.slots = torch.from_numpy(slots[order])
        self.positions = torch.from_numpy(flat[slots][order])
        self.features = torch.from_numpy(np.repeat(features, positions.shape[1])[slots][order])
        self.values = torch.zeros(flat.shape[0], dtype=torch.float32)

    def update(self, chunk: Chunk) -> None:
        """Read the needed entries that lie in this chunk."""
        end = chunk.start + chunk.n_rows
        lo, hi = torch.searchsorted(self.positions, torch.tensor([chunk.start, end])).tolist()
        if hi > lo:
            rows = self.positions[lo:hi] - chunk.start
            self.values[self.slots[lo:hi]] = chunk.lookup(rows, self.features[lo:hi])

    def read_pairs(self, sae: SparseAutoencoder, rows: np.ndarray, scale: float, block: int = 1 << 18) -> bool:
        """Read every needed activation with ``sae.encode_pairs`` (no full encoding); False if the SAE can't."""
        probe = sae.encode_pairs(torch.zeros(1, sae.config.d_in), torch.zeros(1, dtype=torch.int64))
        if probe is None:
            return False
        with torch.no_grad():
            for lo in range(0, len(self.positions), block):
                positions = self.positions[lo : lo + block].numpy()
                x = torch.from_numpy(np.asarray(rows[positions], dtype=np.float32)).mul_(scale)
                self.values[self.slots[lo : lo + block]] = sae.encode_pairs(x, self.features[lo : lo + block])
        return True

    def result(self) -> np.ndarray:
        return self.values.view(self.shape).numpy()
