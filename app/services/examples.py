"""The stored form of a feature's example contexts, and its decoding into tokens and activations for display.

An example's window is stored as two byte strings of equal length in tokens: ``token_ids`` little-endian
uint16 (``PAD_TOKEN_ID`` where the window runs past the document) and ``activations`` little-endian
float16, the feature's activation at each token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

PAD_TOKEN_ID = 65535
TOKEN_DTYPE = np.dtype("<u2")
ACTIVATION_DTYPE = np.dtype("<f2")


def encode_windows(window_ids: np.ndarray, window_acts: np.ndarray) -> tuple[list[bytes], list[bytes]]:
    """Byte strings of each row of (N, W) token ids (negative = outside the document) and activations."""
    ids = np.asarray(window_ids)
    if ids.size and int(ids.max()) >= PAD_TOKEN_ID:
        raise ValueError(f"token id {int(ids.max())} does not fit the stored uint16 windows (ids < {PAD_TOKEN_ID})")
    ids = np.where(ids < 0, PAD_TOKEN_ID, ids).astype(TOKEN_DTYPE)
    acts = np.asarray(window_acts).astype(ACTIVATION_DTYPE)
    return _row_bytes(ids), _row_bytes(acts)


def _row_bytes(array: np.ndarray) -> list[bytes]:
    """One bytes object per row of a 2-d array, sliced from a single buffer (faster than tobytes per row)."""
    if array.shape[0] == 0:
        return []
    buffer = np.ascontiguousarray(array).tobytes()
    width = len(buffer) // array.shape[0]
    return [buffer[start : start + width] for start in range(0, len(buffer), width)]


def decode_example(example_row: Any, vocab_tokens: Sequence[str]) -> dict:
    """The tokens and activations of a stored example, padding dropped: ``{"tokens", "activations", "center"}``.

    ``example_row`` is anything with ``token_ids``, ``activations`` and ``center`` attributes (an ``Example``
    or a query row); ``center`` in the result is the sampled token's position among the kept tokens.
    """
    ids = np.frombuffer(example_row.token_ids, dtype=TOKEN_DTYPE)
    acts = np.frombuffer(example_row.activations, dtype=ACTIVATION_DTYPE)
    if ids.shape != acts.shape:
        raise ValueError(f"example has {ids.size} token ids but {acts.size} activations")
    keep = ids != PAD_TOKEN_ID
    n_vocab = len(vocab_tokens)
    return {
        "tokens": [vocab_tokens[i] if i < n_vocab else f"<{i}>" for i in ids[keep].tolist()],
        "activations": acts[keep].astype(np.float32).tolist(),
        "center": int(keep[: example_row.center].sum()),
    }
