"""Ingest of feature index artifacts: the rows it writes, re-ingest without duplicates, labels kept."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pytest
from sqlalchemy import select

import app.services.ingest as ingest_module
from app.db.models import Dictionary, Example, Feature, Vocabulary
from app.db.session import make_sessionmaker
from app.services.examples import decode_example
from app.services.ingest import bulk_insert, example_columns, ingest_run, vocabulary_hash
from tests.db.builders import TAGS, TOKENS, add_labels, build_run, is_dead, label_rows, table_counts, weights_hash


def rows(engine, table, *order) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(table.__table__).order_by(*order))]


def feature_content(engine) -> list[tuple]:
    """Features without their row ids, by dictionary hash and index."""
    query = (
        select(Dictionary.content_hash, Feature.__table__)
        .join(Dictionary, Feature.dictionary_id == Dictionary.id)
        .order_by(Dictionary.content_hash, Feature.index)
    )
    with engine.connect() as conn:
        return [(r[0],) + tuple(r[3:]) for r in conn.execute(query)]


def example_content(engine) -> list[tuple]:
    """Examples without row ids, by dictionary hash, feature index, kind, quantile and rank."""
    query = (
        select(
            Dictionary.content_hash,
            Feature.index,
            Example.kind,
            Example.quantile,
            Example.rank,
            Example.position,
            Example.center,
            Example.token_ids,
            Example.activations,
        )
        .join(Feature, Example.feature_id == Feature.id)
        .join(Dictionary, Feature.dictionary_id == Dictionary.id)
        .order_by(Dictionary.content_hash, Feature.index, Example.kind, Example.quantile, Example.rank)
    )
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query)]


def one_label(name: str, index: int, labeller: str = "ada") -> dict:
    return {
        "dictionary_hash": weights_hash(name),
        "feature_index": index,
        "labeller": labeller,
        "verdict": "monosemantic",
        "description": "the cat",
        "confidence": 0.9,
        "created_at": datetime(2024, 5, 1, 9, 30),
    }


def test_ingest_writes_one_row_per_dictionary_feature_and_filled_example_slot(engine, built_run):
    summaries = ingest_run(engine, built_run.run_dir)
    assert [s.name for s in summaries] == ["relu_n16_l10.1", "relu_n8_l10.1"]
    expected_examples = {
        index.meta.sae_name: int(
            (index.arrays["top_positions"] >= 0).sum() + (index.arrays["quantile_positions"] >= 0).sum()
        )
        for index in built_run.indexes
    }
    assert {s.name: s.examples for s in summaries} == expected_examples
    assert all(not s.unchanged and s.rows_per_s > 0 for s in summaries)
    counts = table_counts(engine)
    assert counts == {
        "vocabularies": 1,
        "dictionaries": 2,
        "features": 24,
        "examples": sum(expected_examples.values()),
        "labels": 0,
    }


def test_dictionary_rows_carry_the_meta_the_alive_count_and_the_run_metrics(engine, built_run):
    ingest_run(engine, built_run.run_dir)
    with make_sessionmaker(engine)() as session:
        dictionary = session.scalars(select(Dictionary).where(Dictionary.name == "relu_n16_l10.1")).one()
        vocabulary = session.get(Vocabulary, dictionary.vocabulary_id)
    assert dictionary.content_hash == weights_hash("relu_n16_l10.1")
    assert (dictionary.arch, dictionary.dict_size, dictionary.sparsity_key, dictionary.sparsity_value) == (
        "relu",
        16,
        "l1",
        0.1,
    )
    assert (dictionary.layer, dictionary.site, dictionary.model, dictionary.n_tokens) == (2, "mlp_post", "tinylm", 5000)
    assert (dictionary.alive, dictionary.dead) == (12, 4)
    # metrics.json lists relu_n8 first (l0 3.0) then relu_n16 (l0 4.0, fvu 0.05)
    assert (dictionary.l0, dictionary.fvu, dictionary.ce_recovered) == (4.0, 0.05, 0.9)
    assert dictionary.run_dir == str(built_run.run_dir.resolve())
    assert vocabulary.tokens == TOKENS and vocabulary.tag_vocab == TAGS
    assert vocabulary.content_hash == vocabulary_hash(TOKENS)


def test_feature_rows_hold_the_statistics_in_the_documented_shapes(engine, built_run):
    ingest_run(engine, built_run.run_dir)
    index = built_run.index("relu_n8_l10.1")
    a = index.arrays
    with make_sessionmaker(engine)() as session:
        features = session.scalars(
            select(Feature).join(Dictionary).where(Dictionary.name == "relu_n8_l10.1").order_by(Feature.index)
        ).all()
    assert [f.index for f in features] == list(range(8))
    assert [f.alive for f in features] == [not is_dead(i) for i in range(8)]
    feature = features[1]
    assert feature.density == pytest.approx(float(a["density"][1]))
    assert feature.max_activation == pytest.approx(float(a["max_activation"][1]))
    assert feature.histogram == {"max": feature.max_activation, "counts": a["histogram"][1].tolist()}
    top_ids = [int(t) for t in a["top_token_ids"][1] if t >= 0]
    assert [t["token_id"] for t in feature.top_tokens] == top_ids and len(top_ids) == 2  # the -1 pad is dropped
    assert feature.top_tokens[0]["count"] == int(a["top_token_counts"][1, 0])
    assert feature.top_tokens[0]["mean_activation"] == pytest.approx(float(a["top_token_mean"][1, 0]))
    assert feature.top_token_text == " ".join(TOKENS[t].strip() for t in top_ids)
    assert feature.logit_promoted == [
        {"token_id": int(t), "value": pytest.approx(float(v))}
        for t, v in zip(a["promoted_ids"][1], a["promoted_values"][1], strict=True)
    ]
    assert [entry["value"] < 0 for entry in feature.logit_suppressed] == [True, True]
    counts = a["pos_counts"][1]
    expected_tags = sorted(
        ({"tag": TAGS[j], "count": int(c)} for j, c in enumerate(counts) if c > 0), key=lambda t: -t["count"]
    )
    assert feature.pos_tags == expected_tags and all(t["tag"] != "NOUN" for t in feature.pos_tags)
    # relu_n8 is the smallest of the sweep: neighbours only in the larger dictionary, and an MMCS with it
    assert [(n["direction"], n["dictionary_hash"], n["dictionary_size"]) for n in feature.neighbours] == [
        ("larger", weights_hash("relu_n16_l10.1"), 16)
    ] * 2
    assert [n["index"] for n in feature.neighbours] == a["neighbour_larger_ids"][1].tolist()
    assert feature.mmcs_with_larger == pytest.approx(float(a["mmcs_with_larger"][1]))


def test_the_largest_dictionary_has_no_mmcs_with_larger_and_features_of_an_untagged_run_no_tags(engine, tmp_path):
    run = build_run(tmp_path / "untagged", tags=False)
    ingest_run(engine, run.run_dir)
    with make_sessionmaker(engine)() as session:
        largest = session.scalars(select(Feature).join(Dictionary).where(Dictionary.dict_size == 16)).all()
    assert all(f.mmcs_with_larger is None for f in largest)
    assert all(f.pos_tags == [] for f in largest)
    assert {n["direction"] for f in largest for n in f.neighbours} == {"smaller"}
    assert not any(math.isnan(n["cosine"]) for f in largest for n in f.neighbours)


def test_examples_decode_to_the_window_tokens_and_activations_of_the_artifact(engine, built_run):
    ingest_run(engine, built_run.run_dir)
    a = built_run.index("relu_n16_l10.1").arrays
    examples = {(r[1], r[2], r[3], r[4]): r for r in example_content(engine) if r[0] == weights_hash("relu_n16_l10.1")}
    for (feature, kind, quantile, rank), row in examples.items():
        if kind == "top":
            assert quantile is None
            ids, acts = a["top_window_ids"][feature, rank], a["top_window_acts"][feature, rank]
            position = a["top_positions"][feature, rank]
        else:
            ids = a["quantile_window_ids"][feature, quantile, rank]
            acts = a["quantile_window_acts"][feature, quantile, rank]
            position = a["quantile_positions"][feature, quantile, rank]
        assert row[5] == position >= 0
        assert row[6] == 2  # the config's `before`
        keep = ids >= 0
        decoded = decode_example(Example(token_ids=row[7], activations=row[8], center=row[6]), TOKENS)
        assert decoded["tokens"] == [TOKENS[t] for t in ids[keep]]
        assert decoded["activations"] == acts[keep].astype(np.float32).tolist()
        assert decoded["center"] == 2 - int((~keep[:2]).sum())
    filled_top = int((a["top_positions"] >= 0).sum())
    assert sum(1 for key in examples if key[1] == "top") == filled_top
    assert {key[2] for key in examples if key[1] == "quantile"} == {0, 1}


def test_ingesting_twice_gives_the_same_rows_and_skips_unchanged_artifacts(engine, built_run):
    ingest_run(engine, built_run.run_dir)
    features, examples, counts = feature_content(engine), example_content(engine), table_counts(engine)
    again = ingest_run(engine, built_run.run_dir)
    assert all(s.unchanged for s in again)
    assert [s.examples for s in again] == [sum(e[0] == s.content_hash for e in examples) for s in again]
    assert table_counts(engine) == counts
    forced = ingest_run(engine, built_run.run_dir, force=True)
    assert not any(s.unchanged for s in forced)
    assert feature_content(engine) == features
    assert example_content(engine) == examples
    assert table_counts(engine) == counts


def test_re_indexing_replaces_statistics_and_keeps_every_label(engine, built_run):
    ingest_run(engine, built_run.run_dir)
    labels = [one_label("relu_n8_l10.1", 1), one_label("relu_n8_l10.1", 1, "bob"), one_label("relu_n16_l10.1", 3)]
    add_labels(engine, labels)
    stored, before = label_rows(engine), feature_content(engine)

    rebuilt = build_run(built_run.run_dir, seed=7)  # the same dictionaries, new statistics
    ingest_run(engine, rebuilt.run_dir)
    after = feature_content(engine)
    assert len(after) == len(before) and after != before
    with make_sessionmaker(engine)() as session:
        densities = session.scalars(
            select(Feature.density).join(Dictionary).where(Dictionary.name == "relu_n8_l10.1").order_by(Feature.index)
        ).all()
    assert densities == pytest.approx(rebuilt.index("relu_n8_l10.1").arrays["density"].tolist())
    assert label_rows(engine) == stored
    assert table_counts(engine)["dictionaries"] == 2

    retrained = build_run(built_run.run_dir, salt="retrained")  # new weights: new dictionaries beside the old
    ingest_run(engine, retrained.run_dir)
    assert table_counts(engine)["dictionaries"] == 4
    assert label_rows(engine) == stored


def test_a_failure_mid_ingest_leaves_the_dictionary_as_it_was(engine, built_run, monkeypatch):
    ingest_run(engine, built_run.run_dir)
    features, examples = feature_content(engine), example_content(engine)
    build_run(built_run.run_dir, seed=3)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ingest_module, "example_columns", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest_run(engine, built_run.run_dir)
    assert feature_content(engine) == features
    assert example_content(engine) == examples


def test_ingest_accepts_a_sessionmaker(engine, built_run):
    summaries = ingest_run(make_sessionmaker(engine), built_run.run_dir)
    assert len(summaries) == 2


def test_a_run_without_a_feature_index_is_an_error_that_says_what_to_do(engine, tmp_path):
    with pytest.raises(ValueError, match="no feature index in .*monosemantic run"):
        ingest_run(engine, tmp_path)


def test_the_direct_and_the_core_bulk_insert_store_the_same_examples(engine, built_run):
    ingest_run(engine, built_run.run_dir)
    with engine.connect() as conn:
        query = select(Feature.id).join(Dictionary).where(Dictionary.name == "relu_n8_l10.1").order_by(Feature.index)
        feature_ids = np.array(conn.scalars(query).all())
    columns = example_columns(built_run.index("relu_n8_l10.1"), feature_ids, 0, 8)
    stored = []
    for direct in (True, False):
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM examples")
            assert bulk_insert(conn, Example.__table__, columns, direct=direct) == len(columns["feature_id"])
        stored.append([row[1:] for row in rows(engine, Example, Example.id)])
    assert stored[0] == stored[1] and len(stored[0]) == len(columns["kind"])
