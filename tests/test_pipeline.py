"""The LM pipeline end to end on a tiny corpus: artifacts, CE-loss recovered, and resumption."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.cli.commands import main
from tests.text_builders import brown_jsonl
from training.experiments.pipeline import PRESETS, PipelineConfig, run_pipeline
from training.features.index import feature_index_folders, index_run, load_feature_index, load_vocab

TINY = PipelineConfig(
    name="tiny",
    vocab_size=300,
    lm_steps=40,
    lm_batch_size=8,
    dict_sizes=[16, 32],
    l1=[0.03],
    k=[4],
    sae_samples=30_000,
    sae_batch_size=512,
    eval_rows=2_000,
    splice_tokens=2_048,
    toy_twin_samples=8_192,
)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    return brown_jsonl(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def finished(corpus_file, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    return workdir, run_pipeline(TINY, workdir, corpus_file, progress=False)


def test_every_sae_of_the_sweep_is_reported(finished):
    workdir, metrics = finished
    names = {r["name"] for r in metrics["runs"]}
    assert names == {"relu_n16_l10.03", "relu_n32_l10.03", "topk_n16_k4", "topk_n32_k4"}
    for run in metrics["runs"]:
        assert 0 <= run["dead_fraction"] <= 1 and run["fvu"] >= 0 and run["samples_per_s"] > 0
        assert (workdir / "saes" / "saes" / run["name"] / "sae.safetensors").exists()
    assert json.loads((workdir / "metrics.json").read_text()) == metrics
    assert (workdir / "figures" / "heatmap_ce_recovered_relu.png").exists()
    assert (workdir / "figures" / "fvu_vs_samples.png").exists()
    assert (workdir / "figures" / "dead_fraction_vs_samples.png").exists()
    assert set(metrics["stage_seconds"]) == {
        "corpus_and_tokenizer",
        "lm",
        "harvest",
        "sae_sweep",
        "evaluation",
        "feature_index",
        "toy_twin",
    }
    assert {r["dict_size"] for r in metrics["mmcs_with_larger"]} == {16}


def test_metrics_say_how_much_of_each_mlp_layer_the_lm_uses(finished):
    workdir, metrics = finished
    # Every preset starts the LM from the fan-in initialisation, which keeps its MLP neurons in use.
    assert {preset.lm_init for preset in PRESETS.values()} == {"fan_in"}
    assert json.loads((workdir / "lm" / "train_config.json").read_text())["init"] == "fan_in"
    usage = metrics["lm"]["mlp_usage"]
    assert [u["layer"] for u in usage] == list(range(6))
    for u in usage:
        assert u["neurons"] == 64 and 0 <= u["live_neurons"] <= 64
        assert 1 <= u["dims_99"] <= 64 and 0 <= u["outside_residual_width"] <= 1
        assert u["tokens"] > 0 and np.isfinite(u["ablation_loss"])


def test_every_sae_reports_whether_its_held_out_objective_had_stopped_falling(finished):
    workdir, metrics = finished
    convergence = metrics["convergence"]
    assert convergence["window"] == [0.5, 0.7] and convergence["tolerance"] == 0.02
    assert set(convergence["runs"]) == {r["name"] for r in metrics["runs"]}
    for run in metrics["runs"]:
        tracked = convergence["runs"][run["name"]]
        assert run["converged"] is tracked["converged"] is (tracked["objective_fall"] < 0.02)
        assert run["objective_fall"] == tracked["objective_fall"]
        # the tracker's last point is the final SAE on the first held-out rows: close to the full evaluation
        assert tracked["fvu"] == pytest.approx(run["fvu"], rel=0.2)
        assert tracked["l0"] == pytest.approx(run["l0"], rel=0.2)
    assert (workdir / "figures" / "heldout_objective_vs_samples.png").stat().st_size > 10_000


def test_ce_loss_of_a_good_reconstruction_lies_between_clean_and_zero_ablated(finished):
    _, metrics = finished
    best = min(metrics["runs"], key=lambda r: r["fvu"])
    assert best["fvu"] < 0.2
    assert best["ce_zero_ablated"] > best["ce_clean"]
    assert best["ce_clean"] - 1e-3 <= best["ce_spliced"] <= best["ce_zero_ablated"]
    recovered = (best["ce_zero_ablated"] - best["ce_spliced"]) / (best["ce_zero_ablated"] - best["ce_clean"])
    assert best["ce_recovered"] == pytest.approx(recovered)
    gap = best["ce_zero_ablated"] - best["ce_clean"]
    assert 0 < best["ce_recovered"] <= 1 + 1e-3 / gap  # spliced may beat clean by the tolerance above


def test_a_second_run_reuses_every_finished_step(finished, corpus_file):
    workdir, metrics = finished
    artifacts = [
        workdir / "lm" / "model.safetensors",
        workdir / "activations" / "activations_train.f32",
        *sorted((workdir / "saes" / "saes").glob("*/sae.safetensors")),
    ]
    assert all(p.exists() for p in artifacts) and len(artifacts) == 6
    before = {p: p.stat().st_mtime_ns for p in artifacts if "saes" not in p.parts}
    again = run_pipeline(TINY, workdir, corpus_file, progress=False)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert [r["l0"] for r in again["runs"]] == [r["l0"] for r in metrics["runs"]]


def test_run_with_a_missing_corpus_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--preset", "quick", "--workdir", str(tmp_path), "--corpus", str(tmp_path / "nope.txt")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--corpus" in err[0]


def test_every_sae_gets_a_feature_index_with_real_contexts_and_a_rerun_skips_them(finished):
    workdir, metrics = finished
    folders = feature_index_folders(workdir)
    assert {f.name for f in folders} == {r["name"] for r in metrics["runs"]}
    tokens, _ = load_vocab(workdir)
    index = load_feature_index(workdir / "features" / "relu_n32_l10.03")
    assert index.meta.neighbours["smaller"]["name"] == "relu_n16_l10.03"
    assert index.meta.neighbours["larger"] is None
    alive = index.arrays["fire_count"] > 0
    assert alive.sum() > 16
    best = int(np.argmax(index.arrays["max_activation"]))
    window = index.arrays["top_window_ids"][best, 0]
    text = "".join(tokens[i] for i in window if i >= 0)
    assert len(text.strip()) > 10
    assert index.arrays["top_window_acts"][best, 0, 24] == pytest.approx(index.arrays["max_activation"][best], rel=1e-3)
    stamps = {f: (f / "feature_index.safetensors").stat().st_mtime_ns for f in folders}
    assert index_run(workdir, progress=False) == folders
    assert {f: (f / "feature_index.safetensors").stat().st_mtime_ns for f in folders} == stamps


def test_run_loads_the_features_into_the_database_and_serves_them(finished, corpus_file, monkeypatch, capsys):
    """`monosemantic run` resumes the finished run, loads it into the app's database, then serves it."""
    import uvicorn
    from fastapi.testclient import TestClient

    workdir, metrics = finished
    monkeypatch.setitem(PRESETS, "quick", TINY)
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.append((app, kwargs)))
    assert (
        main(["run", "--preset", "quick", "--workdir", str(workdir), "--corpus", str(corpus_file), "--port", "8765"])
        == 0
    )
    out = capsys.readouterr().out
    layer = metrics["lm"]["mlp_usage"][metrics["layer"]]
    assert f"layer {metrics['layer']}'s MLP: {layer['live_neurons']} of 64 neurons live" in out
    assert "4 dictionaries" in out or (workdir / "monosemantic.db").exists()
    for run in metrics["runs"]:
        (line,) = [line for line in out.splitlines() if line.startswith(run["name"] + " ") and "%" in line]
        verdict = "converged" if run["converged"] else "still improving"
        assert line.endswith(f"{run['objective_fall']:6.1%} {verdict}")
    ((app, kwargs),) = served
    assert kwargs["port"] == 8765 and kwargs["host"] == "127.0.0.1"
    with TestClient(app) as client:
        dictionaries = client.get("/api/dictionaries").json()
        assert sorted(d["name"] for d in dictionaries) == sorted(r["name"] for r in metrics["runs"])
        relu = next(d for d in dictionaries if d["name"] == "relu_n32_l10.03")
        feature = client.get(f"/api/dictionaries/{relu['id']}/next-feature", params={"labeller": "ann"}).json()
        assert feature["top_contexts"] and len(feature["top_contexts"][0]["tokens"]) > 5
        assert client.get(f"/dictionaries/{relu['id']}/features/{feature['index']}").status_code == 200


def test_run_trains_with_the_recipe_it_is_given(tmp_path, monkeypatch):
    import app.cli.commands as commands

    seen = []

    class Reached(Exception):
        """The config reached the pipeline: stop before any work."""

    def stop(config, *args, **kwargs):
        seen.append(config)
        raise Reached

    monkeypatch.setattr(commands, "run_pipeline", stop)
    for args, recipe in (([], PRESETS["study"].recipe), (["--recipe", "v3"], "v3")):
        with pytest.raises(Reached):
            main(["run", "--preset", "study", "--workdir", str(tmp_path), "--no-serve", *args])
        assert seen[-1].recipe == recipe
        assert seen[-1].model_dump(exclude={"recipe"}) == PRESETS["study"].model_dump(exclude={"recipe"})
    assert PRESETS["study"].recipe == "v5"


@pytest.mark.parametrize("command", ["run", "train"])
def test_an_unknown_recipe_is_a_one_line_error(command, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--workdir", str(tmp_path), "--recipe", "v9"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--recipe" in err[0] and "v5" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_a_run_with_another_recipe_is_refused_and_keeps_the_saes(finished, corpus_file):
    workdir, _ = finished
    saes = sorted((workdir / "saes").rglob("*.safetensors"))
    before = {p: p.read_bytes() for p in saes}
    with pytest.raises(ValueError, match="different settings"):
        run_pipeline(TINY.model_copy(update={"recipe": "v3"}), workdir, corpus_file, progress=False)
    assert sorted((workdir / "saes").rglob("*.safetensors")) == saes
    assert all(p.read_bytes() == data for p, data in before.items())
