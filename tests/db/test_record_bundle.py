"""The labelling bundle: `monosemantic record` writes a trained run's feature index compactly, and
`serve --record` loads it into a fresh database whose feature pages equal the run's, labels keyed by weights."""

from __future__ import annotations

import gzip
import json
import shutil
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.cli.commands import load_record, main, record_workdir
from app.db.models import Dictionary, Feature
from app.db.session import make_engine, make_sessionmaker
from app.settings import Settings
from app.web.factory import create_app
from tests.text_builders import SMALLEST_PIPELINE, brown_jsonl
from training.analysis.duplicates import near_duplicate_groups
from training.experiments.pipeline import run_pipeline
from training.features.bundle import (
    BUNDLE_DIR,
    MANIFEST,
    bundle_choice,
    compact_arrays,
    restore_arrays,
    write_bundle,
)
from training.features.index import FeatureIndexConfig, index_evidence, index_run, load_feature_index
from training.saes import load_sae


@pytest.fixture(scope="module")
def indexed_run(tmp_path_factory):
    corpus = brown_jsonl(tmp_path_factory.mktemp("corpus"))
    workdir = tmp_path_factory.mktemp("run")
    run_pipeline(SMALLEST_PIPELINE, workdir, corpus, progress=False)
    url = f"sqlite:///{workdir / 'run.db'}"
    assert main(["index", "--workdir", str(workdir), "--db", url, "--no-progress"]) == 0
    return workdir, url


def feature_pages(workdir, url) -> dict[tuple[str, int], dict]:
    """Every feature's API detail by (weights hash, index), without the ids that differ between databases."""
    app = create_app(Settings(workdir=workdir, database_url=url))
    pages = {}
    with TestClient(app) as client:
        for dictionary in client.get("/api/dictionaries").json():
            content_hash = client.get(f"/api/dictionaries/{dictionary['id']}/features/0").json()["dictionary_hash"]
            for index in range(dictionary["dict_size"]):
                page = client.get(f"/api/dictionaries/{dictionary['id']}/features/{index}").json()
                page.pop("dictionary_id")
                for neighbour in page["neighbours"]:
                    neighbour.pop("dictionary_id")
                pages[(content_hash, index)] = page
    return pages


def test_the_index_groups_alive_features_by_the_stable_atom_merge(indexed_run) -> None:
    workdir, url = indexed_run
    name = "relu_n32_l10.03"
    index = load_feature_index(workdir / "features" / name)
    alive = index_evidence(index) == "alive"
    rows = np.flatnonzero(alive)
    decoder = load_sae(workdir / "saes" / "saes" / name).W_dec.detach()
    expected = rows[near_duplicate_groups(decoder[rows]).numpy()]
    assert (index.arrays["duplicate_of"][alive] == expected).all()
    assert (index.arrays["duplicate_of"][~alive] == -1).all()
    with make_sessionmaker(make_engine(url))() as session:
        stored = dict(
            session.execute(
                select(Feature.index, Feature.group_index)
                .join(Dictionary)
                .where(Dictionary.name == name, Feature.alive)
            ).all()
        )
    assert stored == {int(i): int(g) for i, g in zip(rows, expected, strict=True)}


def test_compact_arrays_give_the_index_back_exactly(indexed_run) -> None:
    workdir, _ = indexed_run
    arrays = load_feature_index(workdir / "features" / "relu_n16_l10.03").arrays
    restored = restore_arrays(compact_arrays(arrays))
    assert restored.keys() == arrays.keys()
    for name, array in arrays.items():
        assert restored[name].dtype == array.dtype, name
        assert np.array_equal(restored[name], array, equal_nan=True), name


def test_record_bundle_round_trip_serves_the_runs_feature_pages(indexed_run, tmp_path, capsys) -> None:
    workdir, url = indexed_run
    record = tmp_path / "record"
    assert main(["record", "--workdir", str(workdir), "--out", str(record)]) == 0
    assert "serve --record" in capsys.readouterr().out
    manifest = json.loads((record / BUNDLE_DIR / MANIFEST).read_text())
    metrics = json.loads((workdir / "metrics.json").read_text())
    chosen, _ = bundle_choice(metrics)
    assert [d["name"] for d in manifest["dictionaries"]] == chosen
    assert json.loads((record / "record.json").read_text())["labelling"]["bytes"] < 2 * 2**20

    served = tmp_path / "served"
    settings = Settings(workdir=served, database_url=f"sqlite:///{tmp_path / 'served.db'}")
    start = time.perf_counter()
    load_record(record, settings)
    assert time.perf_counter() - start < 30  # no training, no activations: the study's bundle loads in seconds
    assert not (served / "activations").exists() and not (served / "saes").exists()
    theirs = feature_pages(served, settings.database_url)
    ours = {key: page for key, page in feature_pages(workdir, url).items() if key in theirs}
    assert len(theirs) >= 16
    assert {h for h, _ in theirs} == {d["weights_hash"] for d in manifest["dictionaries"]}
    assert theirs == ours
    # The run's metrics come along, so the served pages show the same feature-count estimate.
    assert json.loads(gzip.decompress((record / BUNDLE_DIR / "metrics.json.gz").read_bytes())) == metrics


def test_bundle_choice_takes_the_sizes_around_the_estimate() -> None:
    runs = [
        {"name": f"{arch}_n{n}", "arch": arch, "dict_size": n, "l1": 0.3 if arch == "relu" else None, "k": None}
        for arch in ("relu", "topk")
        for n in (256, 512, 1024, 2048)
    ]
    names, rule = bundle_choice({"runs": runs, "feature_count_estimate": {"value": 784}})
    assert names == ["relu_n1024", "topk_n1024", "relu_n512", "topk_n512"]
    assert "784" in rule
    assert bundle_choice({"runs": runs, "feature_count_estimate": {"value": 1024}})[0] == ["relu_n1024", "topk_n1024"]


def test_bundle_leaves_out_what_passes_its_budget(indexed_run, tmp_path) -> None:
    workdir, _ = indexed_run
    bundled = write_bundle(workdir, tmp_path, ["relu_n32_l10.03", "relu_n16_l10.03"], budget=1)
    assert [b.name for b in bundled] == ["relu_n32_l10.03"]  # the first always goes in
    manifest = json.loads((tmp_path / BUNDLE_DIR / MANIFEST).read_text())
    assert manifest["left_out"] == ["relu_n16_l10.03"]
    assert sorted(p.name for p in (tmp_path / BUNDLE_DIR).glob("*.xz")) == ["relu_n32_l10.03.safetensors.xz"]


def test_serve_record_without_a_bundle_says_how_to_make_one(tmp_path, capsys) -> None:
    assert main(["serve", "--record", str(tmp_path), "--db", f"sqlite:///{tmp_path / 'x.db'}"]) == 1
    error = capsys.readouterr().err
    assert "no labelling bundle" in error and "monosemantic record" in error
    assert record_workdir(tmp_path).name == f"record-{tmp_path.name}"


def test_new_evidence_criteria_regroup_the_alive_features_without_a_new_index(indexed_run, tmp_path) -> None:
    workdir, _ = indexed_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    folder = copy / "features" / "relu_n32_l10.03"
    before = load_feature_index(folder).arrays
    index_run(copy, FeatureIndexConfig(min_firings=10**9), progress=False)
    after = load_feature_index(folder)
    assert (index_evidence(after) != "alive").all()
    assert (after.arrays["duplicate_of"] == -1).all()  # nothing alive is left to group
    assert np.array_equal(after.arrays["top_window_ids"], before["top_window_ids"])
