"""A small, deterministic database for the app tests: one vocabulary, two dictionaries of one sweep.

Feature ``i`` of a dictionary is alive unless listed in ``dead``; alive features have density
``(i + 1) / 1000`` and max activation ``1 + i / 2``; every alive feature has two top contexts and quantile
samples in intervals 0 and 2. Top tokens are chosen so that ``q`` filters have known answers: feature
``i`` fires most on ``TOKENS[1 + i % 8]`` (" cat" for features 1, 9, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy.orm import Session

from app.db.models import Dictionary, Example, Feature, Label, Vocabulary
from app.services.examples import encode_windows

TOKENS = ["<|endoftext|>", " the", " cat", " sat", " on", " mat", ".", " dog", " Ran", "\n", " fish"]
TAGS = ["", "DT", "NN", "VBD"]
SMALL_SIZE, LARGE_SIZE = 16, 32
SMALL_DEAD = frozenset({3, 7})
N_QUANTILES = 10


@dataclass
class BuiltDatabase:
    """Ids and hashes of what ``build_database`` wrote."""

    small_id: int
    small_hash: str
    large_id: int
    large_hash: str
    small_alive: list[int]


def top_token_id(index: int) -> int:
    """The token feature ``index`` fires on most (never the end-of-text token)."""
    return 1 + index % 8


def add_dictionary(
    session: Session,
    vocabulary: Vocabulary,
    name: str,
    content_hash: str,
    dict_size: int,
    dead: frozenset[int],
    arch: str = "relu",
    sparsity_key: str = "l1",
    sparsity_value: float = 0.1,
    neighbour: tuple[str, int, str] | None = None,
) -> Dictionary:
    """A dictionary with one feature row per latent and example rows for its alive features."""
    dictionary = Dictionary(
        content_hash=content_hash,
        name=name,
        run_dir="/nonexistent/run",
        artifact_dir=f"/nonexistent/run/features/{name}",
        model="tinylm",
        layer=2,
        site="mlp_post",
        arch=arch,
        dict_size=dict_size,
        sparsity_key=sparsity_key,
        sparsity_value=sparsity_value,
        alive=dict_size - len(dead),
        dead=len(dead),
        l0=3.5,
        fvu=0.12,
        ce_recovered=0.93,
        n_tokens=10_000,
        vocabulary=vocabulary,
    )
    session.add(dictionary)
    for i in range(dict_size):
        alive = i not in dead
        token = top_token_id(i)
        max_activation = 1 + i / 2 if alive else 0.0
        feature = Feature(
            dictionary=dictionary,
            index=i,
            alive=alive,
            evidence="alive" if alive else "dead",
            fire_count=(i + 1) * 10 if alive else 0,
            density=(i + 1) / 1000 if alive else 0.0,
            mean_activation=max_activation / 2,
            max_activation=max_activation,
            mmcs_with_larger=0.9 if alive else None,
            top_token_text=TOKENS[token].strip() + " " + TOKENS[top_token_id(i + 1)].strip() if alive else "",
            histogram={"max": max_activation, "counts": [5, 3, 0, 1] if alive else [0, 0, 0, 0]},
            top_tokens=[{"token_id": token, "count": 7, "mean_activation": 0.8}] if alive else [],
            logit_promoted=[{"token_id": 2, "value": 0.5}, {"token_id": 40, "value": 0.25}],
            logit_suppressed=[{"token_id": 6, "value": -0.4}],
            pos_tags=[{"tag": "NN", "count": 4}, {"tag": 3, "count": 2}],
            neighbours=[
                {
                    "dictionary_hash": neighbour[0],
                    "dictionary_size": neighbour[1],
                    "direction": neighbour[2],
                    "index": i // 2,
                    "cosine": 0.8,
                }
            ]
            if neighbour
            else [],
        )
        session.add(feature)
        if alive:
            feature.examples = _examples(i, max_activation)
    return dictionary


def _examples(index: int, max_activation: float) -> list[Example]:
    """Two top contexts (ranks 0, 1) and quantile samples (interval 0 rank 0, interval 2 ranks 0 and 1)."""
    token = top_token_id(index)
    # Window of 5 tokens centred on position 2; the first one is outside the document in the second example.
    ids = np.array([[1, 2, token, 4, 5], [-1, 1, token, 6, 9]])
    acts = np.array([[0.0, 0.25, max_activation, 0.5, 0.0], [0.0, 0.0, max_activation / 2, 0.0, 0.0]])
    token_bytes, act_bytes = encode_windows(ids, acts)
    rows = [
        Example(kind="top", rank=1, quantile=None, position=200 + index, center=2),
        Example(kind="top", rank=0, quantile=None, position=100 + index, center=2),
        # Passages far apart: the pages show each passage once, and these are three.
        Example(kind="quantile", rank=1, quantile=2, position=300, center=2),
        Example(kind="quantile", rank=0, quantile=0, position=310, center=2),
        Example(kind="quantile", rank=0, quantile=2, position=320, center=2),
    ]
    window_of = [1, 0, 1, 0, 0]
    for row, w in zip(rows, window_of, strict=True):
        row.token_ids, row.activations = token_bytes[w], act_bytes[w]
    return rows


def build_database(session: Session) -> BuiltDatabase:
    """Write the vocabulary and both dictionaries (16 latents with 2 dead, 32 latents with none); commit."""
    vocabulary = Vocabulary(content_hash="v" * 64, tokens=TOKENS, tag_vocab=TAGS)
    session.add(vocabulary)
    small_hash, large_hash = "a" * 64, "b" * 64
    small = add_dictionary(
        session, vocabulary, "relu_n16_l10.1", small_hash, SMALL_SIZE, SMALL_DEAD, neighbour=(large_hash, 32, "larger")
    )
    large = add_dictionary(
        session,
        vocabulary,
        "topk_n32_k4",
        large_hash,
        LARGE_SIZE,
        frozenset(),
        arch="topk",
        sparsity_key="k",
        sparsity_value=4,
        neighbour=("c" * 64, 64, "larger"),
    )
    session.commit()
    return BuiltDatabase(
        small_id=small.id,
        small_hash=small_hash,
        large_id=large.id,
        large_hash=large_hash,
        small_alive=[i for i in range(SMALL_SIZE) if i not in SMALL_DEAD],
    )


def add_labels(session: Session, dictionary_hash: str, rows: list[tuple[int, str, str]]) -> None:
    """Add (feature index, labeller, verdict) labels in order, each newer than the one before; commit."""
    start = datetime(2026, 1, 1)
    for offset, (index, labeller, verdict) in enumerate(rows):
        session.add(
            Label(
                dictionary_hash=dictionary_hash,
                feature_index=index,
                labeller=labeller,
                verdict=verdict,
                created_at=start + timedelta(seconds=offset),
            )
        )
    session.commit()
