"""`monosemantic index` over a run with corrupt or mismatched artifacts: one line on stderr, exit 1, nothing changed.

A tiny run is trained and indexed once; each test corrupts a copy of it, runs ``index`` again and checks
that the command names the problem in one line and that neither the database nor the feature index
artifacts were rewritten.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from app.cli.commands import main
from tests.text_builders import SMALLEST_PIPELINE, brown_jsonl
from training.experiments.pipeline import run_pipeline

SMALL, LARGE = "relu_n16_l10.03", "relu_n32_l10.03"


@pytest.fixture(scope="module")
def indexed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained and indexed run (its database in the run folder), never modified by the tests."""
    corpus = brown_jsonl(tmp_path_factory.mktemp("corpus"))
    workdir = tmp_path_factory.mktemp("run")
    run_pipeline(SMALLEST_PIPELINE, workdir, corpus, progress=False)
    assert main(["index", "--workdir", str(workdir), "--no-progress"]) == 0
    return workdir


@pytest.fixture
def run(indexed_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the indexed run to corrupt, its database (the copy's own file) indexed from the copy."""
    monkeypatch.delenv("MONOSEMANTIC_DATABASE_URL", raising=False)
    monkeypatch.delenv("MONOSEMANTIC_WORKDIR", raising=False)
    copy = Path(shutil.copytree(indexed_run, tmp_path / "run"))
    # The database records where its artifacts are: point it at the copy's, so only corruption can change it.
    assert main(["index", "--workdir", str(copy), "--no-progress"]) == 0
    return copy


def database_dump(run: Path) -> list[str]:
    connection = sqlite3.connect(run / "monosemantic.db")
    try:
        return list(connection.iterdump())
    finally:
        connection.close()


def artifact_bytes(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted((run / "features").rglob("*")) if p.is_file()}


def truncate(path: Path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def rewrite_tensors(path: Path, change: Callable[[dict[str, np.ndarray]], None]) -> None:
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path))


def sae_weights(run: Path, name: str = SMALL) -> Path:
    return run / "saes" / "saes" / name / "sae.safetensors"


def feature_index(run: Path, name: str = LARGE) -> Path:
    return run / "features" / name / "feature_index.safetensors"


def narrower_sae(run: Path) -> None:
    """Swap in an SAE trained on 32-dimensional activations, as if copied from another run's config."""
    folder = sae_weights(run).parent
    meta = json.loads((folder / "config.json").read_text())
    meta["config"]["d_in"] = 32
    (folder / "config.json").write_text(json.dumps(meta))

    def narrow(tensors: dict[str, np.ndarray]) -> None:
        for name in ("W_enc", "W_dec"):
            tensors[name] = np.ascontiguousarray(tensors[name][:, :32])
        tensors["b_dec"] = np.ascontiguousarray(tensors["b_dec"][:32])

    rewrite_tensors(folder / "sae.safetensors", narrow)


def fewer_activation_rows(run: Path) -> None:
    """Activations harvested from another token stream: the manifest's row count no longer matches the tokens."""
    path = run / "activations" / "activations_train.json"
    manifest = json.loads(path.read_text())
    manifest["shape"][0] -= 10
    path.write_text(json.dumps(manifest))


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated SAE weights": (lambda run: truncate(sae_weights(run)), "sae.safetensors is unreadable or corrupt"),
    "SAE weights of the wrong shape": (
        lambda run: rewrite_tensors(sae_weights(run), lambda t: t.update(W_enc=np.zeros((16, 8), np.float32))),
        "W_enc has shape (16, 8)",
    ),
    "truncated feature index": (lambda run: truncate(feature_index(run), 1000), "is unreadable or corrupt"),
    "feature index of fewer features": (
        lambda run: rewrite_tensors(feature_index(run), lambda t: t.update(density=t["density"][:8].copy())),
        "density has shape (8,)",
    ),
    "truncated activations": (
        lambda run: truncate(run / "activations" / "activations_train.f32", 4096),
        "mmap length is greater than file size",
    ),
    "activations of other tokens": (fewer_activation_rows, "harvested from other tokens"),
    "feature index windows of the wrong width": (
        lambda run: rewrite_tensors(
            feature_index(run), lambda t: t.update(top_window_ids=t["top_window_ids"][:, :, :5].copy())
        ),
        "top_window_ids",
    ),
    "feature index histogram of the wrong rank": (
        lambda run: rewrite_tensors(feature_index(run), lambda t: t.update(histogram=t["histogram"][:, 0].copy())),
        "histogram",
    ),
    "feature index without an array": (
        lambda run: rewrite_tensors(feature_index(run), lambda t: t.pop("top_token_ids")),
        "top_token_ids",
    ),
    "SAE of another activation width": (narrower_sae, "32"),
}


def index_fails_cleanly(run: Path, capsys: pytest.CaptureFixture[str], expected: str) -> None:
    """Run `index` on the corrupted run: exit 1, one line naming the problem, database and artifacts unchanged."""
    database, artifacts = database_dump(run), artifact_bytes(run)
    capsys.readouterr()
    code = main(["index", "--workdir", str(run), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith("monosemantic index: error: ") and expected in err, err
    assert database_dump(run) == database
    assert artifact_bytes(run) == artifacts


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupt_artifacts_are_a_one_line_error_and_change_nothing(
    run: Path, capsys: pytest.CaptureFixture[str], corruption: str
) -> None:
    corrupt, expected = CORRUPTIONS[corruption]
    corrupt(run)
    index_fails_cleanly(run, capsys, expected)


def test_an_intact_run_indexes_again_without_changes(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database, artifacts = database_dump(run), artifact_bytes(run)
    assert main(["index", "--workdir", str(run), "--no-progress"]) == 0
    assert "unchanged" in capsys.readouterr().out
    assert database_dump(run) == database
    assert artifact_bytes(run) == artifacts
