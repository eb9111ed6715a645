"""``monosemantic train`` on a pipeline run folder, on a sharded store, and data-parallel under torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from app.cli.commands import main
from training.activations.harvest import load_activations, site_module
from training.activations.store import STORE_DIR, harvest_shard
from training.data.tokenizer import TokenizeConfig, load_tokenized, tokenize_corpus
from training.features.index import load_feature_index
from training.lm.tinylm import save_lm
from training.saes import load_sae

from .text_builders import TINY_VOCAB, tiny_corpus, tiny_lm

TRAIN_ARGS = ["--dict-sizes", "32,64", "--samples", "4096", "--batch-size", "256", "--init-samples", "512"]
NAMES = ["relu_n32_l10.1", "relu_n32_l10.3", "relu_n64_l10.1", "relu_n64_l10.3", "topk_n32_k8", "topk_n64_k8"]
TOLERANCE = 1e-4


def _pipeline_folder(path: Path) -> Path:
    """A run folder as the pipeline leaves it after the LM step: tokens/ and lm/, nothing harvested."""
    tokenize_corpus(tiny_corpus(16), path / "tokens", TokenizeConfig(vocab_size=TINY_VOCAB), progress=False)
    save_lm(tiny_lm(), path / "lm")
    return path


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    workdir = _pipeline_folder(tmp_path_factory.mktemp("single") / "run")
    assert main(["train", "--workdir", str(workdir), *TRAIN_ARGS, "--no-progress"]) == 0
    return workdir


def test_train_harvests_a_pipeline_folder_then_trains_and_indexes(single: Path) -> None:
    _, manifest = load_activations(single / "activations", "train")
    assert (manifest.layer, manifest.site, manifest.module) == (2, "mlp_post", site_module(2, "mlp_post"))
    metrics = json.loads((single / "metrics.json").read_text())
    assert sorted(r["name"] for r in metrics["runs"]) == NAMES and metrics["model"] == "tinylm"
    assert all(r["ce_recovered"] is None and 0 < r["fvu"] < 1 for r in metrics["runs"])
    index = load_feature_index(single / "features" / "relu_n64_l10.1")
    assert "promoted_ids" in index.arrays  # our LM is there: logit effects are computed
    spec = json.loads((single / "saes" / "sweep.json").read_text())
    assert spec["source"]["kind"] == "activations" and "scale" in spec["source"]
    assert sorted(metrics["convergence"]["runs"]) == NAMES
    assert all(r["converged"] is metrics["convergence"]["runs"][r["name"]]["converged"] for r in metrics["runs"])
    assert (single / "figures" / "heldout_objective_vs_samples.png").exists()
    assert {
        json.loads((single / "saes" / "saes" / n / "config.json").read_text())["config"]["recipe"] for n in NAMES
    } == {"v5"}


def test_train_uses_the_recipe_it_is_given(tmp_path: Path) -> None:
    workdir = _pipeline_folder(tmp_path / "run")
    args = ["--dict-sizes", "32", "--samples", "1024", "--batch-size", "256", "--init-samples", "512"]
    assert main(["train", "--workdir", str(workdir), *args, "--recipe", "v2", "--no-progress"]) == 0
    saved = [json.loads(p.read_text())["config"] for p in (workdir / "saes" / "saes").glob("*/config.json")]
    assert len(saved) == 3 and {c["recipe"] for c in saved} == {"v2"}
    assert json.loads((workdir / "metrics.json").read_text())["config"]["recipe"] == "v2"


def test_train_streams_a_sharded_store_and_merges_it_for_the_index(single: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    shutil.copytree(single / "tokens", workdir / "tokens")
    tokens = load_tokenized(workdir / "tokens").train.tokens
    identity = {"layer": 2, "site": "mlp_post", "model": "tinylm"}
    for index in range(3):
        store = workdir / "activations" / STORE_DIR
        harvest_shard(tiny_lm(), site_module(2, "mlp_post"), tokens, store, index, 3, 16, 4, identity, progress=False)
    assert main(["train", "--workdir", str(workdir), *TRAIN_ARGS, "--no-progress"]) == 0
    assert json.loads((workdir / "saes" / "sweep.json").read_text())["source"]["kind"] == "activation_shards"
    merged, _ = load_activations(workdir / "activations", "train")
    reference, _ = load_activations(single / "activations", "train")
    np.testing.assert_array_equal(np.asarray(merged), np.asarray(reference))
    for name in NAMES:  # the same rows in the same batches: the same SAEs as from the one file
        torch.testing.assert_close(load_sae(workdir / "saes" / "saes" / name).W_dec, _decoder(single, name))
    assert sorted(p.name for p in (workdir / "features").iterdir() if p.is_dir()) == NAMES


def _decoder(workdir: Path, name: str) -> torch.Tensor:
    return load_sae(workdir / "saes" / "saes" / name).W_dec


@pytest.mark.timeout(180)
def test_torchrun_with_two_processes_matches_one_process(single: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    for part in ("tokens", "lm", "activations"):
        shutil.copytree(single / part, workdir / part)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "app", "train", "--workdir", str(workdir), *TRAIN_ARGS, "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=170, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("feature count estimate") == 1  # only the first process reports
    for name in NAMES:
        diff = (_decoder(workdir, name) - _decoder(single, name)).abs().max().item()
        assert diff < TOLERANCE, (name, diff)
    log = (workdir / "saes" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == len((single / "saes" / "train_log.jsonl").read_text().splitlines())
    assert json.loads((workdir / "metrics.json").read_text())["runs"][0]["name"] in NAMES
    # the first process alone tracks the held-out objective, once per record
    heldout = (workdir / "saes" / "heldout_log.jsonl").read_text().splitlines()
    assert len(heldout) == len((single / "saes" / "heldout_log.jsonl").read_text().splitlines())
