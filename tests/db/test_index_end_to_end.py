"""`monosemantic index` on a real (tiny) trained run: the lead's feature index, then ingest into the database."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from app.cli.commands import main
from app.db.models import Dictionary, Example, Feature
from app.db.session import make_engine, make_sessionmaker
from app.services.examples import decode_example
from tests.db.builders import add_labels, label_rows, table_counts
from tests.text_builders import SMALLEST_PIPELINE, brown_jsonl
from training.experiments.pipeline import run_pipeline
from training.features.index import load_vocab


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    corpus = brown_jsonl(tmp_path_factory.mktemp("corpus"))
    workdir = tmp_path_factory.mktemp("run")
    run_pipeline(SMALLEST_PIPELINE, workdir, corpus, progress=False)
    return workdir


def test_index_of_a_trained_run_fills_the_database_and_keeps_labels_on_re_index(trained_run, capsys, monkeypatch):
    monkeypatch.delenv("MONOSEMANTIC_DATABASE_URL", raising=False)
    assert main(["index", "--workdir", str(trained_run), "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[:2]] == ["relu_n16_l10.03", "relu_n32_l10.03"]
    engine = make_engine(f"sqlite:///{trained_run / 'monosemantic.db'}")
    counts = table_counts(engine)
    assert counts["dictionaries"] == 2 and counts["features"] == 48 and counts["examples"] > 0
    tokens, _ = load_vocab(trained_run)
    metrics = {run["name"]: run for run in json.loads((trained_run / "metrics.json").read_text())["runs"]}
    with make_sessionmaker(engine)() as session:
        dictionary = session.scalars(select(Dictionary).where(Dictionary.name == "relu_n32_l10.03")).one()
        assert dictionary.l0 == pytest.approx(metrics["relu_n32_l10.03"]["l0"])
        assert dictionary.alive + dictionary.rare + dictionary.dead == 32  # every latent in one evidence class
        feature = session.scalars(
            select(Feature).where(Feature.dictionary_id == dictionary.id, Feature.alive).order_by(Feature.index)
        ).first()
        assert feature.top_tokens and feature.logit_promoted and feature.histogram["counts"]
        assert {n["direction"] for n in feature.neighbours} == {"smaller", "same"}
        assert all(n["index"] != feature.index for n in feature.neighbours if n["direction"] == "same")
        best = session.scalars(
            select(Example).where(Example.feature_id == feature.id, Example.kind == "top", Example.rank == 0)
        ).one()
        decoded = decode_example(best, tokens)
        assert decoded["activations"][decoded["center"]] == pytest.approx(feature.max_activation, rel=1e-2)

    add_labels(
        engine,
        [
            {
                "dictionary_hash": dictionary.content_hash,
                "feature_index": feature.index,
                "labeller": "ada",
                "verdict": "monosemantic",
                "description": "",
                "confidence": None,
            }
        ],
    )
    labels = label_rows(engine)
    assert main(["index", "--workdir", str(trained_run), "--no-progress", "--force"]) == 0
    assert table_counts(engine) == counts | {"labels": 1}
    assert label_rows(engine) == labels
    engine.dispose()
