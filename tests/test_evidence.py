"""The evidence levels: dead (never fires), rare (too few firings or too small a contribution) and alive."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from tests.db.builders import ACTIVATION_RMS_NORM, build_run, is_dead, is_rare_every_eighth
from training.experiments.evidence_report import update_run_metrics
from training.features.evidence import EvidenceCriteria, classify_evidence, count_evidence
from training.features.index import FeatureIndexConfig, FeatureIndexMeta, index_evidence


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


def test_the_run_metrics_gain_dead_rare_alive_and_the_dead_view_counts_rare_as_dead(tmp_path):
    run = build_run(tmp_path / "run", sizes=(8, 16), rare=is_rare_every_eighth)
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    metrics["feature_count_estimate"] = {"value": None, "from_dead_fraction": []}
    (run.run_dir / "metrics.json").write_text(json.dumps(metrics))
    written = update_run_metrics(run.run_dir, FeatureIndexConfig())
    assert written == json.loads((run.run_dir / "metrics.json").read_text())
    by_name = {record["name"]: record for record in written["runs"]}
    # 8 features: dead 3, 7; rare 1 (few firings). 16: dead 3, 7, 11, 15; rare 1 (firings), 9 (contribution).
    assert by_name["relu_n8_l10.1"]["evidence"] == {"dead": 2, "rare": 1, "alive": 5}
    assert by_name["relu_n16_l10.1"]["evidence"] == {"dead": 4, "rare": 2, "alive": 10}
    assert by_name["relu_n16_l10.1"]["dead_or_rare_fraction"] == pytest.approx(6 / 16)
    assert (
        written["evidence_criteria"]["min_firings"] == 20 and written["evidence_criteria"]["min_contribution"] == 0.05
    )
    (view,) = written["feature_count_estimate"]["from_dead_fraction"]
    assert view["sweep"] == "relu 0.1" and view["alive"] == {"8": 5, "16": 10}
    assert "dead + rare" in written["feature_count_estimate"]["from_dead_fraction_counts"]
    assert (run.run_dir / "figures" / "heatmap_dead_or_rare_fraction_relu.png").stat().st_size > 0


def test_changing_only_the_criteria_keeps_the_arrays_and_rewrites_the_meta(tmp_path):
    from training.features.index import _is_current

    run = build_run(tmp_path / "run", sizes=(8,))
    folder = run.run_dir / "features" / run.indexes[0].meta.sae_name
    meta = run.indexes[0].meta
    stricter = FeatureIndexMeta(**{**asdict(meta), "config": {**meta.config, "min_firings": 50}})
    assert _is_current(folder, stricter)
    assert json.loads((folder / "feature_index.json").read_text())["config"]["min_firings"] == 50
    other = FeatureIndexMeta(**{**asdict(meta), "config": {**meta.config, "n_top": 99}})
    assert not _is_current(folder, other)
