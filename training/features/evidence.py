"""Which features have enough evidence to be judged: ``dead``, ``rare`` or ``alive``, defined once.

A feature is ``dead`` when it never fires on the index corpus, ``rare`` when it fires but on fewer than
``min_firings`` tokens or when its largest contribution to a reconstruction (max activation x the norm of
its decoder atom) is below ``min_contribution`` x the RMS norm of the activation rows, and ``alive``
otherwise. Labelling queues and labellable estimates cover alive features only: a latent that fired a
handful of times at a tiny value cannot be judged, and a label of it says nothing about the layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_MIN_FIRINGS = 20
DEFAULT_MIN_CONTRIBUTION = 0.05
DEAD, RARE, ALIVE = "dead", "rare", "alive"
EVIDENCE_LEVELS = (DEAD, RARE, ALIVE)


@dataclass(frozen=True)
class EvidenceCriteria:
    """The thresholds a feature must reach to count as alive (both are stated wherever they are used)."""

    min_firings: int = DEFAULT_MIN_FIRINGS
    min_contribution: float = DEFAULT_MIN_CONTRIBUTION

    def describe(self) -> str:
        """The criteria in words, as pages and reports state them."""
        return (
            f"fired on at least {self.min_firings} tokens with a largest contribution of at least "
            f"{self.min_contribution:.0%} of the activations' RMS norm"
        )


@dataclass(frozen=True)
class EvidenceCounts:
    """How many features of a dictionary are dead, rare and alive (they sum to the dictionary size)."""

    dead: int
    rare: int
    alive: int

    def as_dict(self) -> dict[str, int]:
        """The counts by level name, as metrics.json records them."""
        return {DEAD: self.dead, RARE: self.rare, ALIVE: self.alive}


def classify_evidence(
    fire_count: np.ndarray,
    max_contribution: np.ndarray,
    activation_rms_norm: float,
    criteria: EvidenceCriteria = EvidenceCriteria(),
) -> np.ndarray:
    """The evidence level of every feature as a string array ("dead", "rare" or "alive").

    ``max_contribution`` is each feature's max activation times its decoder atom's norm, in the same units
    as ``activation_rms_norm`` (the RMS of the activation rows' norms the SAE reads).
    """
    fire_count = np.asarray(fire_count)
    contribution = np.asarray(max_contribution, dtype=np.float64)
    if fire_count.shape != contribution.shape:
        raise ValueError(f"fire_count has shape {fire_count.shape} but max_contribution has {contribution.shape}")
    enough = (fire_count >= criteria.min_firings) & (contribution >= criteria.min_contribution * activation_rms_norm)
    levels = np.full(fire_count.shape, RARE, dtype=object)
    levels[fire_count == 0] = DEAD
    levels[(fire_count > 0) & enough] = ALIVE
    return levels.astype(str)


def count_evidence(levels: np.ndarray) -> EvidenceCounts:
    """How many of the classified features are at each level."""
    return EvidenceCounts(
        dead=int((levels == DEAD).sum()), rare=int((levels == RARE).sum()), alive=int((levels == ALIVE).sum())
    )
