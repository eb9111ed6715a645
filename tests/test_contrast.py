"""The contrastive feature search: its statistics, a planted feature, a real run, and its CLI, API and page."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.cli.commands import main
from app.services.ingest import ingest_run
from app.settings import Settings
from app.web.factory import create_app
from tests.text_builders import SMALLEST_PIPELINE, brown_jsonl
from training.activations.harvest import load_activations
from training.data.tokenizer import load_tokenized
from training.experiments.pipeline import run_pipeline
from training.features.contrast import (
    ContrastConfig,
    ContrastInputError,
    CorpusText,
    auc_columns,
    best_unit,
    compile_pattern,
    contrast,
    contrast_positions,
    delong,
    examples_pattern,
    feature_results,
    layer_activations,
    match_positions,
    probe_auc,
    streamed_fire_counts,
)
from training.features.index import index_run, load_feature_index
from training.lm.tinylm import load_lm
from training.saes import SAEConfig, build_sae, load_sae


def test_auc_columns_counts_ties_as_half_and_reads_direction():
    scores = np.array([[3.0, 0.0, 1.0], [2.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    is_a = np.array([True, True, False, False])
    assert auc_columns(scores, is_a).tolist() == [1.0, 0.5, 0.5]
    assert auc_columns(-scores[:, :1], is_a).tolist() == [0.0]


def test_delong_matches_its_definition_over_all_pairs():
    rng = np.random.default_rng(4)
    scores = np.round(rng.normal(size=60), 1)  # rounded: many ties, which count half
    is_a = rng.random(60) < 0.4
    scores[is_a] += 0.5
    x, y = scores[is_a], scores[~is_a]
    psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    se = np.sqrt(v10.var(ddof=1) / len(x) + v01.var(ddof=1) / len(y))
    auc = delong(scores, is_a)
    assert auc.value == pytest.approx(psi.mean()) == pytest.approx(auc_columns(scores[:, None], is_a)[0])
    assert (auc.low, auc.high) == pytest.approx((psi.mean() - 1.96 * se, psi.mean() + 1.96 * se))


def test_delong_interval_agrees_with_a_bootstrap_and_narrows_with_more_positions():
    rng = np.random.default_rng(5)
    is_a = rng.random(600) < 0.5
    scores = np.where(rng.random(600) < 0.7, 0.0, rng.random(600)) + np.where(is_a, 0.3, 0.0) * (rng.random(600) < 0.5)
    auc = delong(scores, is_a)
    boot = []
    for _ in range(400):
        pick = rng.integers(0, 600, 600)
        boot.append(auc_columns(scores[pick][:, None], is_a[pick])[0])
    assert (auc.high - auc.low) / 3.92 == pytest.approx(np.std(boot), rel=0.2)
    small = delong(scores[:60], is_a[:60])
    assert small.low < auc.low <= auc.value <= auc.high < small.high
    flipped = delong(-scores, is_a)
    assert flipped.value == pytest.approx(auc.flipped().value) and flipped.low == pytest.approx(auc.flipped().low)


def test_a_probe_on_two_random_position_sets_is_near_chance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 16))
    is_a = rng.random(2000) < 0.5
    auc = probe_auc(x[:1000], is_a[:1000], x[1000:], is_a[1000:])
    assert 0.44 < auc.value < 0.56 and auc.low < 0.5 < auc.high


def test_a_probe_finds_a_direction_that_separates_the_sets():
    rng = np.random.default_rng(1)
    is_a = rng.random(2000) < 0.5
    x = rng.normal(size=(2000, 16))
    x[:, 3] += np.where(is_a, 1.5, -1.5)
    assert probe_auc(x[:1000], is_a[:1000], x[1000:], is_a[1000:]).value > 0.95


def test_the_best_unit_is_the_one_dimension_that_separates_in_either_direction():
    rng = np.random.default_rng(7)
    is_a = rng.random(2000) < 0.5
    x = rng.normal(size=(2000, 16))
    x[:, 9] -= np.where(is_a, 1.0, -1.0)
    train = np.arange(2000) < 1000
    unit, auc, more_on = best_unit(x, is_a, train)
    expected = 1 - auc_columns(x[~train][:, [9]], is_a[~train])[0]
    assert (unit, more_on) == (9, "b") and auc.value == pytest.approx(expected) and auc.value > 0.85


def tiny_corpus(n_tokens: int) -> CorpusText:
    vocab = [f"t{i} " for i in range(50)]
    tokens = np.arange(n_tokens) % 50
    lengths = np.array([len(v) for v in vocab])[tokens]
    return CorpusText(
        text="".join(vocab[t] for t in tokens),
        starts=np.concatenate([[0], np.cumsum(lengths)]),
        vocab=vocab,
        tokens=tokens,
    )


def test_a_planted_feature_is_ranked_first_with_its_held_out_auc():
    rng = np.random.default_rng(2)
    n, size = 1200, 64
    is_a = np.arange(n) < 600
    codes = np.where(rng.random((n, size)) < 0.1, rng.random((n, size)), 0.0)
    codes[:, 41] = np.where(is_a, 1 + rng.random(n), np.where(rng.random(n) < 0.05, 0.3, 0.0))
    train = rng.random(n) < 0.5
    positions = np.arange(n) * 3
    features, pair = feature_results("planted", codes, is_a, train, positions, tiny_corpus(4000), ContrastConfig())
    assert features[0].index == 41 and features[0].fires_more_on == "a"
    assert features[0].auc.value > 0.95 and features[0].fire_rate_a == 1.0 and features[0].fire_rate_b < 0.1
    assert "[[" in features[0].contexts[0]
    assert 41 in pair.indices and pair.auc.value > 0.95
    assert all(f.auc.value < 0.7 for f in features[1:])


def test_patterns_need_a_marked_target_and_valid_syntax():
    assert compile_pattern("a", r"Mr[[\.]]").groupindex == {"target": 1}
    assert compile_pattern("b", r"(?P<target>\.) [A-Z]").groupindex == {"target": 1}
    for pattern, message in [("Mr\\.", "mark the target"), ("x(", "not a valid regular expression"), ("  ", "empty")]:
        with pytest.raises(ContrastInputError, match=message) as error:
            compile_pattern("a", pattern)
        assert error.value.field == "a"
    with pytest.raises(ContrastInputError, match="one target"):
        match_positions(tiny_corpus(100), "b", "[[t1]] [[t2]]")
    with pytest.raises(ContrastInputError, match="no \\[\\[...\\]\\]|has no target"):
        examples_pattern("a", ["Mr. Smith"])


def test_targets_map_to_the_token_that_holds_them():
    corpus = tiny_corpus(200)
    positions = match_positions(corpus, "a", r"t3 [[t4]] ")
    assert positions.tolist() == [4, 54, 104, 154]
    assert match_positions(corpus, "a", examples_pattern("a", ["t3 [[t4 ]]"])).tolist() == positions.tolist()
    with pytest.raises(ContrastInputError, match="matches no token"):
        match_positions(corpus, "a", "zz[[q]]")


@pytest.fixture(scope="module")
def indexed_run(tmp_path_factory) -> Path:
    corpus = brown_jsonl(tmp_path_factory.mktemp("corpus"))
    workdir = tmp_path_factory.mktemp("run")
    run_pipeline(SMALLEST_PIPELINE, workdir, corpus, progress=False)
    index_run(workdir, progress=False)
    return workdir


def test_the_lm_rows_at_the_sets_positions_are_the_harvested_ones(indexed_run):
    tokens = load_tokenized(indexed_run / "tokens").train.tokens
    rows, manifest = load_activations(indexed_run / "activations", "train")
    positions = np.array([0, 5, 127, 128, 400, len(tokens) - 1])
    layers = layer_activations(load_lm(indexed_run / "lm"), tokens, positions[::-1].copy(), progress=False)
    harvested = np.asarray(rows[positions[::-1]])
    assert np.allclose(layers[(manifest.layer, "mlp")], harvested, atol=1e-5)
    assert {key[1] for key in layers} == {"mlp", "resid"} and len(layers) == 2 * 6


def test_a_run_is_searched_layer_by_layer_and_dictionary_by_dictionary(indexed_run):
    result = contrast(indexed_run, r"[[\.]]", r"[[,]]", ContrastConfig(max_positions=30), progress=False)
    assert result.positions_a == 30 and 10 < result.positions_b <= 30 and result.dropped_overlap == 0
    assert result.matched_a == 37 and result.matched_b == result.positions_b == 21
    assert result.heldout_a == 15 and result.harvested_layer == 2
    assert len(result.probes) == 12 and all(p.auc.low <= p.auc.value <= p.auc.high for p in result.probes)
    # Two different tokens are told apart from the embedding on: the probes separate them well above chance.
    assert np.median([p.auc.value for p in result.probes]) > 0.75
    assert set(result.features) == {"relu_n16_l10.03", "relu_n32_l10.03"}
    again = contrast(indexed_run, r"[[\.]]", r"[[,]]", ContrastConfig(max_positions=30), progress=False)
    assert json.dumps(again.to_json()) == json.dumps(result.to_json())


PLANTED = 7


@pytest.fixture(scope="module")
def planted_run(indexed_run, tmp_path_factory) -> Path:
    """A copy of the indexed run with one more dictionary: random atoms, and atom 7 planted on the linear
    discriminant of the layer-2 MLP rows at periods against those at commas, its threshold half way between."""
    workdir = tmp_path_factory.mktemp("planted") / "run"
    shutil.copytree(indexed_run, workdir, ignore=shutil.ignore_patterns("*.db"))
    corpus = CorpusText.of(load_tokenized(workdir / "tokens"))
    periods, commas = match_positions(corpus, "a", r"[[\.]]"), match_positions(corpus, "b", "[[,]]")
    _, manifest = load_activations(workdir / "activations", "train")
    rows = layer_activations(load_lm(workdir / "lm"), corpus.tokens, np.concatenate([periods, commas]), False)
    scaled = rows[(manifest.layer, "mlp")].astype(np.float64) * float(manifest.mean_sq_norm) ** -0.5
    at_a, at_b = scaled[: len(periods)], scaled[len(periods) :]
    pooled = np.cov(np.concatenate([at_a - at_a.mean(0), at_b - at_b.mean(0)]).T)
    direction = np.linalg.solve(
        pooled + 1e-3 * np.trace(pooled) / len(pooled) * np.eye(len(pooled)), at_a.mean(0) - at_b.mean(0)
    )
    direction /= np.linalg.norm(direction)
    lowest_a, highest_b = (at_a @ direction).min(), (at_b @ direction).max()
    assert lowest_a > highest_b  # the planted atom separates every period from every comma
    sae = build_sae(SAEConfig(arch="relu", d_in=scaled.shape[1], dict_size=24, l1=0.03, seed=11, tag="planted"))
    sae.W_enc[PLANTED] = torch.from_numpy(20 * direction).float()
    sae.b_enc[PLANTED] = -20 * float(lowest_a + highest_b) / 2
    sae.save(workdir / "saes" / "saes" / sae.config.name)
    return workdir


def test_a_planted_feature_in_a_run_is_ranked_first(planted_run):
    result = contrast(planted_run, r"[[\.]]", "[[,]]", ContrastConfig(max_positions=200), progress=False)
    planted = result.features["relu_n24_l10.03_planted"]
    assert planted[0].index == PLANTED and planted[0].fires_more_on == "a"
    assert planted[0].auc.value == 1.0 and planted[0].fire_rate_a == 1.0 and planted[0].fire_rate_b == 0.0
    assert all(f.auc.value < 0.99 for f in planted[1:])
    assert all("[[.]]" in context for context in planted[0].contexts)
    # Only the dictionaries the run's feature index covers get corpus contexts, read from that index.
    assert result.indexed == ["relu_n16_l10.03", "relu_n32_l10.03"] and planted[0].top_contexts == []
    best = result.features["relu_n32_l10.03"][0]
    top = load_feature_index(planted_run / "features" / "relu_n32_l10.03").arrays["top_positions"][best.index]
    corpus = CorpusText.of(load_tokenized(planted_run / "tokens"))
    assert best.top_contexts == [corpus.snippet(int(p)) for p in top[:3] if p >= 0] and best.top_contexts

    # Corpus precision: streamed over every activation row for the unindexed relu dictionary, from the index
    # otherwise; firings on a's matches (fire rate x matches) over all its firings.
    rows, manifest = load_activations(planted_run / "activations", "train")
    sae = load_sae(planted_run / "saes" / "saes" / "relu_n24_l10.03_planted")
    with torch.no_grad():
        codes = sae.encode(torch.from_numpy(np.array(rows)) * float(manifest.mean_sq_norm) ** -0.5)
    fires = int((codes[:, PLANTED] > 0).sum())
    assert planted[0].corpus_fire_count == fires >= result.matched_a
    assert planted[0].corpus_precision == pytest.approx(result.matched_a / fires)
    index = load_feature_index(planted_run / "features" / "relu_n32_l10.03")
    assert best.corpus_fire_count == int(index.arrays["fire_count"][best.index])
    assert 0 < best.corpus_precision <= 1


def test_competing_latents_are_not_streamed():
    rows = np.random.default_rng(8).normal(size=(100, 8)).astype(np.float32)
    relu = build_sae(SAEConfig(arch="relu", d_in=8, dict_size=16, l1=0.1))
    expected = (relu.encode(torch.from_numpy(rows)) > 0).sum(0).numpy()[[3, 5]]
    assert streamed_fire_counts(relu, rows, 1.0, [3, 5], chunk=30).tolist() == expected.tolist()
    topk = build_sae(SAEConfig(arch="topk", d_in=8, dict_size=16, k=2))
    assert streamed_fire_counts(topk, rows, 1.0, [3, 5]) is None


def test_an_index_of_other_weights_gives_no_contexts(planted_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(planted_run, workdir)
    folder = workdir / "saes" / "saes" / "relu_n16_l10.03"
    sae = load_sae(folder)
    sae.W_enc *= 1.01
    sae.save(folder)
    result = contrast(workdir, r"[[\.]]", "[[,]]", ContrastConfig(max_positions=40), progress=False)
    assert result.indexed == ["relu_n32_l10.03"]
    assert all(f.top_contexts == [] for f in result.features["relu_n16_l10.03"])


def test_two_random_position_sets_are_near_chance_at_every_layer(indexed_run):
    n_tokens = len(load_tokenized(indexed_run / "tokens").train.tokens)
    shuffled = np.random.default_rng(6).permutation(n_tokens)
    config = ContrastConfig(max_positions=400, seed=3)
    result = contrast_positions(indexed_run, shuffled[:400], shuffled[400:800], config, progress=False)
    assert result.heldout_a == result.heldout_b == 200 and len(result.probes) == 12
    assert all(abs(p.auc.value - 0.5) < 0.1 for p in result.probes)
    assert sum(p.auc.low < 0.5 < p.auc.high for p in result.probes) >= 10
    assert all(abs(f[0].auc.value - 0.5) < 0.12 for f in result.features.values())
    assert all(abs(p.best_unit_auc.value - 0.5) < 0.12 for p in result.probes)
    assert result.config["max_positions"] == 400 and result.config["seed"] == 3


def test_the_cli_prints_the_search_and_writes_json(indexed_run, tmp_path, capsys):
    out = tmp_path / "contrast.json"
    args = ["contrast", "--workdir", str(indexed_run), "--a", r"[[\.]]", "--b-example", "[[,]]"]
    assert main([*args, "--max-positions", "100", "--json", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert (
        "layer 2 mlp   probe" in printed
        and "unit #" in printed
        and "the SAEs' layer" in printed
        and "relu_n32_l10.03" in printed
    )
    assert json.loads(out.read_text())["positions_b"] > 10
    with pytest.raises(SystemExit) as bad:
        main(["contrast", "--workdir", str(indexed_run), "--a", "x(", "--b", "[[,]]"])
    err = capsys.readouterr().err
    assert bad.value.code == 2 and err.count("\n") == 1 and "argument --a: not a valid regular expression" in err
    assert "best single feature: relu_n" in printed and "fires most in the corpus: " in printed
    assert json.loads(out.read_text())["config"]["max_positions"] == 100
    for flags, message in [
        (["--max-positions", "2"], "argument --max-positions: at least 4"),
        (["--seed", "-1"], "argument --seed: expected an integer >= 0"),
        (["--b", "[[qqqq]]zz"], "argument --b: the pattern matches no token"),
        (["--b-example", "no marker"], "argument --b: example 'no marker' has no target"),
    ]:
        b_flags = [] if any(f.startswith("--b") for f in flags) else ["--b", "[[,]]"]
        with pytest.raises(SystemExit) as bad:
            main(["contrast", "--workdir", str(indexed_run), "--a", r"[[\.]]", *b_flags, *flags, "--no-progress"])
        err = capsys.readouterr().err
        assert bad.value.code == 2 and err.count("\n") == 1 and message in err, err


@pytest.fixture(scope="module")
def client(indexed_run, tmp_path_factory):
    database = tmp_path_factory.mktemp("db") / "contrast.db"
    app = create_app(Settings(workdir=indexed_run, database_url=f"sqlite:///{database}"))
    ingest_run(app.state.engine, indexed_run)
    with TestClient(app) as test_client:
        yield test_client


def test_the_api_answers_with_probes_and_linked_features(client):
    response = client.post("/api/contrast", json={"a": r"[[\.]]", "b_examples": ["[[,]]"], "max_positions": 100})
    assert response.status_code == 200
    body = response.json()
    assert body["heldout_a"] > 5 and len(body["probes"]) == 12
    feature = body["features"]["relu_n32_l10.03"][0]
    assert feature["dictionary_id"] is not None
    assert feature["top_contexts"] and "[[" in feature["top_contexts"][0]
    assert feature["corpus_fire_count"] > 0 and 0 < feature["corpus_precision"] <= 1
    assert body["config"]["max_positions"] == 100 and body["indexed"] == ["relu_n16_l10.03", "relu_n32_l10.03"]
    assert "run" not in body  # the server's paths stay on the server
    assert client.get(f"/api/dictionaries/{feature['dictionary_id']}/features/{feature['index']}").status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"a": "x(", "b": "[[,]]"}, "a"),
        ({"a": r"[[\.]]", "b": "no marker"}, "b"),
        ({"a": r"[[\.]]", "b": "[[qqqq]]zz"}, "b"),
        ({"a": r"[[\.]]"}, "b"),
        ({"a": r"[[\.]]", "b": "[[,]]", "b_examples": ["[[,]]"]}, "b"),
        ({"a_examples": ["no target"], "b": "[[,]]"}, "a_examples"),
        ({"a": r"[[\.]]", "b": "[[,]]", "max_positions": 5}, "max_positions"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(client, body, field):
    response = client.post("/api/contrast", json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == field


def test_the_page_renders_the_form_and_a_result(client):
    empty = client.get("/contrast")
    assert empty.status_code == 200 and 'name="a"' in empty.text and 'href="/contrast"' in empty.text
    page = client.get("/contrast", params={"a": r"[[\.]]", "b": "[[,]]", "max_positions": 100})
    assert page.status_code == 200
    assert "Probe AUC per layer" in page.text and "(the SAEs' layer)" in page.text
    assert "relu_n32_l10.03" in page.text and "/features/" in page.text
    assert (
        "In the corpus:" in page.text
        and "Among the sets:" in page.text
        and "DeLong" in page.text
        and "best MLP neuron" in page.text
    )
    assert "corpus precision" in page.text
    bad = client.get("/contrast", params={"a": "x(", "b": "[[,]]"})
    assert bad.status_code == 422 and "Set a: not a valid regular expression" in bad.text


def test_the_probe_is_deterministic_in_torch():
    torch.manual_seed(0)
    x = np.random.default_rng(3).normal(size=(400, 4))
    is_a = x[:, 0] > 0
    assert probe_auc(x[:200], is_a[:200], x[200:], is_a[200:]) == probe_auc(x[:200], is_a[:200], x[200:], is_a[200:])
