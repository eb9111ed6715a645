"""The evidence levels: dead (never fires), rare (too few firings or too small a contribution) and alive."""

from __future__ import annotations

import numpy as np
import pytest

from tests.db.builders import ACTIVATION_RMS_NORM, build_run, is_dead, is_rare_every_eighth
from training.evidence import EvidenceCriteria, classify_evidence, count_evidence
from training.feature_index import FeatureIndexConfig, index_evidence


def test_each_criterion_decides_at_its_threshold():
    criteria = EvidenceCriteria(min_firings=20, min_contribution=0.05)
    rms = 4.0  # contributions below 0.05 x 4 = 0.2 are too small
    fire_count = np.array([0, 1, 19, 20, 20, 500, 20])
    contribution = np.array([0.0, 9.0, 9.0, 0.2, 0.1999, 0.01, 0.2001])
    levels = classify_evidence(fire_count, contribution, rms, criteria)
    assert levels.tolist() == ["dead", "rare", "rare", "alive", "rare", "rare", "alive"]
    assert count_evidence(levels).as_dict() == {"dead": 1, "rare": 4, "alive": 2}


def test_defaults_are_20_firings_and_5_percent_and_live_in_the_index_config():
    config = FeatureIndexConfig()
    assert (config.min_firings, config.min_contribution) == (20, 0.05)
    assert config.evidence == EvidenceCriteria(20, 0.05)
    assert "at least 20 tokens" in config.evidence.describe() and "5%" in config.evidence.describe()


def test_mismatched_arrays_are_an_error():
    with pytest.raises(ValueError, match="shape"):
        classify_evidence(np.zeros(3), np.zeros(4), 1.0)


def test_an_index_classifies_with_the_criteria_it_records(tmp_path):
    run = build_run(tmp_path / "run", sizes=(16,), rare=is_rare_every_eighth)
    index = run.indexes[0]
    assert index.meta.config["min_firings"] == 20 and index.meta.activation_rms_norm == ACTIVATION_RMS_NORM
    levels = index_evidence(index)
    expected = ["dead" if is_dead(i) else "rare" if is_rare_every_eighth(i) else "alive" for i in range(16)]
    assert levels.tolist() == expected
    # Lowering the bar in the recorded config turns the few-firings rare feature (index 1) alive.
    index.meta.config["min_firings"] = 1
    assert index_evidence(index)[1] == "alive" and index_evidence(index)[9] == "rare"  # 9: too small a contribution
