"""POST /api/activations on a real tiny run: tokenizer, LM, harvested scale and SAE written to a folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from app.db.models import Dictionary, Vocabulary
from tests.app.conftest import make_app
from tests.text_builders import tiny_corpus, tiny_lm_config
from training.activations.harvest import HarvestConfig, harvest_activations
from training.data.tokenizer import TokenizeConfig, load_tokenized, tokenize_corpus
from training.features.index import INDEX_META, file_hash
from training.lm.tinylm import TinyLM, save_lm
from training.saes import SAEConfig, build_sae

LAYER = 1
DICT_SIZE = 32
SAE_NAME = "relu_n32_l10.01"


@dataclass
class TinyRun:
    run_dir: Path
    lm: TinyLM
    scale: float
    weights_hash: str


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """A run folder as `monosemantic run` lays it out, with an untrained LM (context 16) and a random SAE."""
    run_dir = tmp_path_factory.mktemp("run")
    tokens = tokenize_corpus(tiny_corpus(4), run_dir / "tokens", TokenizeConfig(vocab_size=320), progress=False)
    torch.manual_seed(0)
    lm = TinyLM(tiny_lm_config(context=16)).eval()
    save_lm(lm, run_dir / "lm")
    manifest = harvest_activations(
        lm, tokens.train.tokens, run_dir / "activations", "train", HarvestConfig(layer=LAYER), progress=False
    )
    sae = build_sae(SAEConfig(arch="relu", d_in=lm.config.d_mlp, dict_size=DICT_SIZE, l1=0.01, seed=1))
    sae.save(run_dir / "saes" / SAE_NAME)
    features = run_dir / "features" / SAE_NAME
    features.mkdir(parents=True)
    (features / INDEX_META).write_text(json.dumps({"sae_dir": f"saes/{SAE_NAME}"}))
    return TinyRun(run_dir, lm, manifest.mean_sq_norm**-0.5, file_hash(run_dir / "saes" / SAE_NAME / "sae.safetensors"))


@pytest.fixture
def inspector_client(tmp_path: Path, tiny_run: TinyRun) -> tuple[TestClient, int, int]:
    """A client over a database holding the tiny run's dictionary and one whose weights no longer match."""
    app = make_app(tmp_path, inspector_max_chars=400)
    with app.state.sessionmaker() as session:
        vocabulary = Vocabulary(content_hash="v" * 64, tokens=["x"])
        ids = []
        for content_hash in (tiny_run.weights_hash, "f" * 64):
            dictionary = Dictionary(
                content_hash=content_hash,
                name=SAE_NAME,
                run_dir=str(tiny_run.run_dir),
                artifact_dir=str(tiny_run.run_dir / "features" / SAE_NAME),
                layer=LAYER,
                site="mlp_post",
                arch="relu",
                dict_size=DICT_SIZE,
                sparsity_key="l1",
                sparsity_value=0.01,
                alive=DICT_SIZE,
                dead=0,
                n_tokens=100,
                vocabulary=vocabulary,
            )
            session.add(dictionary)
            session.flush()
            ids.append(dictionary.id)
        session.commit()
    return TestClient(app), ids[0], ids[1]


def expected_codes(run: TinyRun, window_ids: list[int]) -> torch.Tensor:
    """SAE codes of one window computed directly: the LM's MLP hidden state, scaled, encoded."""
    from training.saes import load_sae

    sae = load_sae(run.run_dir / "saes" / SAE_NAME)
    with torch.no_grad():
        hidden = run.lm.mlp_hidden(torch.tensor([window_ids]), LAYER)[0]
        return sae.encode(hidden * run.scale)


def test_activations_match_the_lm_and_sae_run_directly(inspector_client, tiny_run: TinyRun) -> None:
    client, dictionary_id, _ = inspector_client
    text = "The jury said it did find that many of the voters were"
    response = client.post("/api/activations", json={"dictionary_id": dictionary_id, "text": text, "feature": 5})
    assert response.status_code == 200
    body = response.json()
    tokenized = load_tokenized(tiny_run.run_dir / "tokens")
    ids = tokenized.tokenizer.encode(text, add_special_tokens=False).ids
    assert len(ids) + 1 > 16  # longer than one context window, so windowing is exercised
    assert "".join(t["token"] for t in body["tokens"]) == text
    assert len(body["tokens"]) == len(ids)
    stream = [tokenized.eos_id, *ids]
    codes = torch.cat([expected_codes(tiny_run, stream[i : i + 16]) for i in range(0, len(stream), 16)])[1:]
    got_feature = torch.tensor([t["feature_activation"] for t in body["tokens"]])
    assert torch.allclose(got_feature, codes[:, 5], atol=1e-5)
    for position, token in enumerate(body["tokens"]):
        top = token["top_features"]
        assert len(top) <= 5 and all(f["activation"] > 0 for f in top)
        expected = codes[position].topk(5)
        wanted = [(int(i), float(v)) for v, i in zip(expected.values, expected.indices, strict=True) if v > 0]
        assert [f["index"] for f in top] == [i for i, _ in wanted]
        assert [f["activation"] for f in top] == pytest.approx([v for _, v in wanted], abs=1e-5)
    assert sum(len(t["top_features"]) for t in body["tokens"]) > 0


def test_models_are_loaded_once(inspector_client) -> None:
    client, dictionary_id, _ = inspector_client
    for text in ("one", "two"):
        assert client.post("/api/activations", json={"dictionary_id": dictionary_id, "text": text}).status_code == 200
    inspector = client.app.state.inspector
    assert len(inspector._runs) == 1 and len(inspector._saes) == 1


def test_activations_validate_text_feature_and_dictionary(inspector_client) -> None:
    client, dictionary_id, stale_id = inspector_client
    too_long = client.post("/api/activations", json={"dictionary_id": dictionary_id, "text": "a" * 401})
    assert too_long.status_code == 422 and too_long.json()["detail"][0]["loc"] == ["body", "text"]
    empty = client.post("/api/activations", json={"dictionary_id": dictionary_id, "text": ""})
    assert empty.status_code == 422 and empty.json()["detail"][0]["loc"] == ["body", "text"]
    feature = client.post("/api/activations", json={"dictionary_id": dictionary_id, "text": "a", "feature": DICT_SIZE})
    assert feature.status_code == 422 and feature.json()["detail"][0]["loc"] == ["body", "feature"]
    assert client.post("/api/activations", json={"dictionary_id": 999, "text": "a"}).status_code == 404
    stale = client.post("/api/activations", json={"dictionary_id": stale_id, "text": "a"})
    assert stale.status_code == 409 and "re-index" in stale.json()["detail"]


def test_a_shared_inspector_url_shows_the_result_with_feature_names(inspector_client) -> None:
    from app.db.models import Label

    client, dictionary_id, _ = inspector_client
    with client.app.state.sessionmaker() as session:
        dictionary = session.get(Dictionary, dictionary_id)
        session.add(
            Label(
                dictionary_hash=dictionary.content_hash,
                feature_index=0,
                labeller="ann",
                verdict="monosemantic",
                description="named zero",
            )
        )
        session.commit()
    page = client.get("/inspect", params={"dictionary": dictionary_id, "text": "the cat sat", "feature": "0"})
    assert page.status_code == 200
    assert "the cat sat" in page.text and "Feature <a" in page.text and "named zero" in page.text
