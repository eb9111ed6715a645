"""SAELens and sparsify layouts: golden folders written here, each format's formula, round trips, errors, a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from app.cli.commands import main
from app.db.models import Dictionary
from app.db.session import make_engine, make_sessionmaker
from tests.text_builders import SMALLEST_PIPELINE, brown_jsonl
from training.experiments.pipeline import run_pipeline
from training.formats.raw import FormatError, RawSAE, from_raw, to_raw
from training.formats.run_saes import export_run_sae, import_run_sae
from training.formats.saelens import read_saelens, write_saelens
from training.formats.sparsify import read_sparsify, write_sparsify
from training.saes import SAEConfig, build_sae

D_IN, D_SAE, K = 6, 10, 3


def random_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "W_enc": torch.randn(D_IN, D_SAE, generator=gen),
        "W_dec": torch.randn(D_SAE, D_IN, generator=gen),
        "b_enc": torch.randn(D_SAE, generator=gen) * 0.1,
        "b_dec": torch.randn(D_IN, generator=gen),
        "threshold": torch.rand(D_SAE, generator=gen) * 0.5,
    }


def write_golden_saelens(folder: Path, architecture: str, tensors: dict, **cfg_extra) -> None:
    """A SAELens 6 folder as SAELens's save_model lays it out, written by hand."""
    folder.mkdir(parents=True, exist_ok=True)
    names = ["W_enc", "W_dec", "b_enc", "b_dec"] + (["threshold"] if architecture == "jumprelu" else [])
    save_file({n: tensors[n].contiguous() for n in names}, str(folder / "sae_weights.safetensors"))
    cfg = {
        "architecture": architecture,
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"sae_lens_version": "6.54.0", "model_name": "m", "hook_name": "blocks.2.mlp.act"},
    }
    if architecture == "topk":
        cfg |= {"k": K, "rescale_acts_by_decoder_norm": False}
    cfg |= cfg_extra
    (folder / "cfg.json").write_text(json.dumps(cfg))


def write_golden_sparsify(folder: Path, tensors: dict, **cfg_extra) -> None:
    """A sparsify hookpoint folder, written by hand: encoder.weight is W_enc transposed."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            "encoder.weight": tensors["W_enc"].T.contiguous(),
            "encoder.bias": tensors["b_enc"],
            "W_dec": tensors["W_dec"],
            "b_dec": tensors["b_dec"],
        },
        str(folder / "sae.safetensors"),
    )
    cfg = {
        "activation": "topk",
        "expansion_factor": 2,
        "normalize_decoder": True,
        "num_latents": D_SAE,
        "k": K,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": D_IN,
    } | cfg_extra
    (folder / "cfg.json").write_text(json.dumps(cfg))


# Each format's documented encoding, written independently of the code under test.
def saelens_reference(t: dict, architecture: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pre = (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    if architecture == "standard":
        codes = torch.relu(pre)
    elif architecture == "jumprelu":
        codes = pre * (pre > t["threshold"]).float()
    else:
        top = pre.topk(K, dim=1)
        codes = torch.zeros_like(pre).scatter(1, top.indices, torch.relu(top.values))
    return codes, codes @ t["W_dec"] + t["b_dec"]


def sparsify_reference(t: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    acts = torch.relu((x - t["b_dec"]) @ t["W_enc"].T.T + t["b_enc"])
    top = acts.topk(K, dim=1)
    recon = (top.values.unsqueeze(-1) * t["W_dec"][top.indices]).sum(dim=1) + t["b_dec"]
    return torch.zeros_like(acts).scatter(1, top.indices, top.values), recon


@pytest.mark.parametrize("architecture", ["standard", "topk", "jumprelu"])
def test_a_saelens_folder_encodes_and_decodes_as_saelens_does(tmp_path, architecture):
    tensors = random_tensors()
    write_golden_saelens(tmp_path / "sae", architecture, tensors)
    raw = read_saelens(tmp_path / "sae")
    x = torch.randn(50, D_IN)
    codes, recon = saelens_reference(tensors, architecture, x)
    assert torch.allclose(raw.encode(x), codes, atol=1e-5)
    assert torch.allclose(raw.decode(raw.encode(x)), recon, atol=1e-5)
    assert raw.metadata["hook_name"] == "blocks.2.mlp.act"


@pytest.mark.parametrize("architecture", ["standard", "topk", "jumprelu"])
def test_an_imported_saelens_sae_is_ours_with_the_same_codes_at_any_scale(tmp_path, architecture):
    tensors = random_tensors(1)
    write_golden_saelens(tmp_path / "sae", architecture, tensors)
    scale = 0.37
    ours = from_raw(read_saelens(tmp_path / "sae"), scale)
    x = torch.randn(40, D_IN)
    codes, recon = saelens_reference(tensors, architecture, x)
    assert torch.allclose(ours.encode(x * scale), codes, atol=1e-5)
    assert torch.allclose(ours.reconstruct(x * scale) / scale, recon, atol=1e-4)


def test_a_sparsify_folder_encodes_and_decodes_as_sparsify_does(tmp_path):
    tensors = random_tensors(2)
    write_golden_sparsify(tmp_path / "layers.2.mlp", tensors)
    raw = read_sparsify(tmp_path / "layers.2.mlp")
    x = torch.randn(50, D_IN)
    codes, recon = sparsify_reference(tensors, x)
    assert torch.allclose(raw.encode(x), codes, atol=1e-5)
    assert torch.allclose(raw.decode(raw.encode(x)), recon, atol=1e-5)
    assert raw.metadata["hookpoint"] == "layers.2.mlp"


@pytest.mark.parametrize("architecture", ["standard", "topk", "jumprelu"])
def test_saelens_import_then_export_gives_back_the_same_tensors_and_cfg(tmp_path, architecture):
    tensors = random_tensors(3)
    write_golden_saelens(tmp_path / "in", architecture, tensors)
    scale = 1.7
    ours = from_raw(read_saelens(tmp_path / "in"), scale)
    back = to_raw(ours, scale, read_saelens(tmp_path / "in").metadata)
    write_saelens(back, tmp_path / "out")
    original, written = (
        load_file(str(tmp_path / "in" / "sae_weights.safetensors")),
        load_file(str(tmp_path / "out" / "sae_weights.safetensors")),
    )
    assert set(written) == set(original)
    for name in original:
        assert torch.allclose(written[name], original[name], rtol=1e-5, atol=1e-6), name
    cfg_in = json.loads((tmp_path / "in" / "cfg.json").read_text())
    cfg_out = json.loads((tmp_path / "out" / "cfg.json").read_text())
    for key in ("architecture", "d_in", "d_sae", "apply_b_dec_to_input", "normalize_activations", "k"):
        assert cfg_out.get(key) == cfg_in.get(key), key
    assert cfg_out["metadata"]["hook_name"] == cfg_in["metadata"]["hook_name"]


def test_sparsify_import_then_export_gives_back_the_same_tensors_and_cfg(tmp_path):
    tensors = random_tensors(4)
    write_golden_sparsify(tmp_path / "in", tensors, expansion_factor=1, normalize_decoder=False)
    back = to_raw(from_raw(read_sparsify(tmp_path / "in"), 0.5), 0.5)
    write_sparsify(back, tmp_path / "out")
    original, written = (
        load_file(str(tmp_path / "in" / "sae.safetensors")),
        load_file(str(tmp_path / "out" / "sae.safetensors")),
    )
    for name in original:
        assert torch.allclose(written[name], original[name], rtol=1e-5, atol=1e-6), name
    cfg_in = json.loads((tmp_path / "in" / "cfg.json").read_text())
    cfg_out = json.loads((tmp_path / "out" / "cfg.json").read_text())
    assert cfg_out == cfg_in


def trained_like(arch: str) -> torch.nn.Module:
    """One of our SAEs with random weights of every kind it has (thresholds too)."""
    sparsity = {"k": K} if arch in ("topk", "batchtopk") else {"l1": 0.1}
    sae = build_sae(SAEConfig(arch=arch, d_in=D_IN, dict_size=D_SAE, **sparsity))
    gen = torch.Generator().manual_seed(5)
    sae.b_enc.copy_(torch.randn(D_SAE, generator=gen) * 0.3)
    sae.b_dec.copy_(torch.randn(D_IN, generator=gen))
    if arch == "jumprelu":
        sae.log_threshold.copy_((torch.rand(D_SAE, generator=gen) * 0.5 + 0.01).log())
    if arch == "batchtopk":
        sae.threshold = torch.tensor(0.2)
    return sae


@pytest.mark.parametrize(
    ("arch", "raw_arch"),
    [("relu", "standard"), ("tied", "standard"), ("topk", "topk"), ("jumprelu", "jumprelu"), ("batchtopk", "jumprelu")],
)
def test_every_architecture_exports_to_an_sae_with_the_same_codes_on_raw_activations(arch, raw_arch):
    sae, scale = trained_like(arch), 0.6
    raw = to_raw(sae, scale)
    assert raw.arch == raw_arch
    x = torch.randn(64, D_IN) * 2
    assert torch.allclose(raw.encode(x), sae.encode(x * scale), atol=1e-5)
    assert torch.allclose(raw.decode(raw.encode(x)), sae.reconstruct(x * scale) / scale, atol=1e-4)


def test_sparsify_refuses_what_it_cannot_express(tmp_path):
    with pytest.raises(FormatError, match="top-k SAEs only, and this one is relu"):
        write_sparsify(to_raw(trained_like("relu"), 1.0), tmp_path / "out")
    write_golden_saelens(tmp_path / "standard", "standard", random_tensors())
    with pytest.raises(FormatError, match="this one is relu"):
        write_sparsify(read_saelens(tmp_path / "standard"), tmp_path / "out")
    write_golden_sparsify(tmp_path / "g", random_tensors(), activation="groupmax")
    with pytest.raises(FormatError, match="groupmax"):
        read_sparsify(tmp_path / "g")
    write_golden_sparsify(tmp_path / "s", random_tensors(), skip_connection=True)
    with pytest.raises(FormatError, match="skip_connection"):
        read_sparsify(tmp_path / "s")


def test_saelens_folders_that_cannot_load_faithfully_are_clear_errors(tmp_path):
    tensors = random_tensors()
    write_golden_saelens(tmp_path / "gated", "gated", tensors)
    with pytest.raises(FormatError, match="architecture 'gated'"):
        read_saelens(tmp_path / "gated")
    write_golden_saelens(tmp_path / "norm", "standard", tensors, normalize_activations="expected_average_only_in")
    with pytest.raises(FormatError, match="normalize_activations"):
        read_saelens(tmp_path / "norm")
    write_golden_saelens(tmp_path / "whiten", "standard", tensors, normalize_activations="covariance_whitening")
    with pytest.raises(FormatError, match="fold_activation_whitening"):
        read_saelens(tmp_path / "whiten")
    write_golden_saelens(tmp_path / "ln", "standard", tensors, normalize_activations="layer_norm")
    with pytest.raises(FormatError, match="layer_norm.*no affine SAE"):
        read_saelens(tmp_path / "ln")
    write_golden_saelens(tmp_path / "z", "standard", tensors, reshape_activations="hook_z")
    with pytest.raises(FormatError, match="reshape_activations 'hook_z'"):
        read_saelens(tmp_path / "z")
    write_golden_saelens(tmp_path / "transcoder", "transcoder", tensors, d_out=D_IN)
    with pytest.raises(FormatError, match="architecture 'transcoder'.*another site"):
        read_saelens(tmp_path / "transcoder")
    write_golden_saelens(tmp_path / "batchtopk", "batchtopk", tensors, k=K)
    with pytest.raises(FormatError, match="save_inference_model"):
        read_saelens(tmp_path / "batchtopk")
    write_golden_saelens(tmp_path / "future", "standard", tensors, some_new_option=True)
    with pytest.raises(FormatError, match="'some_new_option'"):
        read_saelens(tmp_path / "future")
    write_golden_saelens(tmp_path / "scaled", "standard", tensors)
    save_file(
        {**{n: tensors[n] for n in ("W_enc", "W_dec", "b_enc", "b_dec")}, "scaling_factor": torch.ones(D_SAE)},
        str(tmp_path / "scaled" / "sae_weights.safetensors"),
    )
    with pytest.raises(FormatError, match="scaling_factor"):
        read_saelens(tmp_path / "scaled")
    write_golden_saelens(tmp_path / "wide", "standard", tensors, d_in=D_IN + 1)
    with pytest.raises(FormatError, match="d_in"):
        read_saelens(tmp_path / "wide")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "cfg.json").write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        read_saelens(tmp_path / "broken")
    write_golden_saelens(tmp_path / "noweights", "standard", tensors)
    (tmp_path / "noweights" / "sae_weights.safetensors").unlink()
    with pytest.raises(FormatError, match="missing"):
        read_saelens(tmp_path / "noweights")


def test_pre_6_saelens_files_are_read_with_their_top_level_metadata(tmp_path):
    tensors = random_tensors()
    write_golden_saelens(
        tmp_path / "old",
        "standard",
        tensors,
        metadata=None,
        hook_name="blocks.2.hook_mlp_out",
        model_name="gpt2",
        context_size=128,
        activation_fn_str="topk",
        activation_fn_kwargs={"k": K},
    )
    raw = read_saelens(tmp_path / "old")
    assert (raw.arch, raw.k) == ("topk", K)
    assert raw.metadata == {"model_name": "gpt2", "hook_name": "blocks.2.hook_mlp_out", "context_size": 128}


def test_apply_b_dec_to_input_false_is_folded_into_the_encoder_bias(tmp_path):
    tensors = random_tensors()
    write_golden_saelens(tmp_path / "sae", "standard", tensors, apply_b_dec_to_input=False)
    raw = read_saelens(tmp_path / "sae")
    x = torch.randn(20, D_IN)
    expected = torch.relu(x @ tensors["W_enc"] + tensors["b_enc"])
    assert torch.allclose(raw.encode(x), expected, atol=1e-5)


def test_rescale_acts_by_decoder_norm_is_folded_with_saelens_codes_and_reconstructions(tmp_path):
    tensors = random_tensors(6)
    write_golden_saelens(
        tmp_path / "sae", "topk", tensors, rescale_acts_by_decoder_norm=True, apply_b_dec_to_input=False
    )
    raw = read_saelens(tmp_path / "sae")
    x = torch.randn(30, D_IN)
    # SAELens's TopKSAE: it ranks and keeps pre * |W_dec row| and decodes codes / |W_dec row|.
    norms = tensors["W_dec"].norm(dim=-1)
    pre = (x @ tensors["W_enc"] + tensors["b_enc"]) * norms
    top = pre.topk(K, dim=1)
    codes = torch.zeros_like(pre).scatter(1, top.indices, top.values.relu())
    recon = (codes / norms) @ tensors["W_dec"] + tensors["b_dec"]
    assert torch.allclose(raw.encode(x), codes, atol=1e-5)
    assert torch.allclose(raw.decode(raw.encode(x)), recon, atol=1e-5)
    assert torch.allclose(raw.W_dec.norm(dim=-1), torch.ones(D_SAE), atol=1e-6)
    assert any("rescale_acts_by_decoder_norm" in c for c in raw.conversions)
    assert any("apply_b_dec_to_input" in c for c in raw.conversions)
    # Written back: the same cfg.json, and SAELens's formula on the written tensors gives the same outputs.
    ours = from_raw(raw, 0.8)
    back = to_raw(ours, 0.8, raw.metadata)
    back.metadata.pop("monosemantic_arch")
    back.source_format, back.source_cfg = raw.source_format, raw.source_cfg
    write_saelens(back, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "cfg.json").read_text()) == json.loads(
        (tmp_path / "sae" / "cfg.json").read_text()
    )
    written = load_file(str(tmp_path / "out" / "sae_weights.safetensors"))
    norms = written["W_dec"].norm(dim=-1)
    pre = (x @ written["W_enc"] + written["b_enc"]) * norms
    top = pre.topk(K, dim=1)
    again = torch.zeros_like(pre).scatter(1, top.indices, top.values.relu())
    assert torch.allclose(again, codes, atol=1e-4)
    assert torch.allclose((again / norms) @ written["W_dec"] + written["b_dec"], recon, atol=1e-4)


def test_a_bfloat16_saelens_sae_is_written_back_in_bfloat16(tmp_path):
    tensors = {name: t.to(torch.bfloat16) for name, t in random_tensors(7).items()}
    write_golden_saelens(tmp_path / "sae", "standard", tensors, dtype="bfloat16")
    raw = read_saelens(tmp_path / "sae")
    back = to_raw(from_raw(raw, 1.3), 1.3, raw.metadata)
    back.source_format, back.source_cfg = raw.source_format, raw.source_cfg
    write_saelens(back, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "cfg.json").read_text())["dtype"] == "bfloat16"
    written = load_file(str(tmp_path / "out" / "sae_weights.safetensors"))
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert written[name].dtype == torch.bfloat16 and torch.equal(written[name], tensors[name]), name


def test_a_raw_sae_with_inconsistent_shapes_is_refused():
    t = random_tensors()
    raw = RawSAE("standard", t["W_enc"], t["b_enc"][:-1], t["W_dec"], t["b_dec"])
    with pytest.raises(FormatError, match="b_enc"):
        raw.check_shapes()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    corpus = brown_jsonl(tmp_path_factory.mktemp("corpus"))
    workdir = tmp_path_factory.mktemp("run")
    run_pipeline(SMALLEST_PIPELINE, workdir, corpus, progress=False)
    return workdir


def test_an_export_imported_into_the_run_is_indexed_and_served_with_its_fvu(trained_run, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MONOSEMANTIC_DATABASE_URL", raising=False)
    out = tmp_path / "export"
    with pytest.raises(SystemExit) as missing_out:
        main(["sae", "export", "--workdir", str(trained_run), "--sae", "relu_n32_l10.03", "--format", "saelens"])
    assert missing_out.value.code == 2 and "--out" in capsys.readouterr().err
    args = ["--workdir", str(trained_run), "--sae", "relu_n32_l10.03", "--format", "saelens", "--out", str(out)]
    assert main(["sae", "export", *args]) == 0
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["architecture"] == "standard" and cfg["metadata"]["hook_name"] == "blocks.2.mlp.act"

    imported = ["sae", "import", str(out), "--format", "saelens", "--workdir", str(trained_run), "--name", "back"]
    assert main(imported) == 0
    assert main(imported) == 1
    assert "already has an SAE named 'back'" in capsys.readouterr().err
    assert main(["index", "--workdir", str(trained_run), "--no-progress"]) == 0

    metrics = {r["name"]: r for r in json.loads((trained_run / "metrics.json").read_text())["runs"]}
    engine = make_engine(f"sqlite:///{trained_run / 'monosemantic.db'}")
    with make_sessionmaker(engine)() as session:
        rows = {d.name: d for d in session.query(Dictionary)}
    engine.dispose()
    assert rows["back"].source == "saelens" and rows["relu_n32_l10.03"].source == "ours"
    assert rows["back"].source_metadata["metadata"]["hook_name"] == "blocks.2.mlp.act"
    # Same held-out rows, same codes: the imported SAE's FVU and L0 are the original's.
    assert rows["back"].fvu == pytest.approx(metrics["relu_n32_l10.03"]["fvu"], rel=1e-4)
    assert rows["back"].l0 == pytest.approx(metrics["relu_n32_l10.03"]["l0"], rel=1e-4)
    assert rows["back"].dead == rows["relu_n32_l10.03"].dead


def test_importing_an_sae_of_another_width_or_hook_is_a_one_line_error(trained_run, tmp_path, capsys):
    write_golden_saelens(tmp_path / "narrow", "standard", random_tensors())
    code = main(["sae", "import", str(tmp_path / "narrow"), "--format", "saelens", "--workdir", str(trained_run)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "6-dimensional inputs" in err
    export_run_sae(trained_run, "relu_n16_l10.03", "saelens", tmp_path / "hooked")
    cfg = json.loads((tmp_path / "hooked" / "cfg.json").read_text())
    cfg["metadata"]["hook_name"] = "blocks.4.mlp.act"
    (tmp_path / "hooked" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(FormatError, match="blocks.4.mlp.act"):
        import_run_sae(tmp_path / "hooked", "saelens", trained_run, "other")
    folder, _ = import_run_sae(tmp_path / "hooked", "saelens", trained_run, "other", check_hook=False)
    assert (folder / "sae.safetensors").exists()
    missing = ["--workdir", str(trained_run), "--sae", "nope", "--format", "sparsify", "--out", str(tmp_path / "x")]
    code = main(["sae", "export", *missing])
    assert code == 1 and "no SAE named 'nope'" in capsys.readouterr().err


FIXTURES = Path(__file__).parent / "data" / "formats"


def saelens_topk_outputs(tensors: dict, k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SAELens's TopKSAE with rescale_acts_by_decoder_norm, written from its source, on raw rows."""
    norms = tensors["W_dec"].norm(dim=-1)
    pre = ((x - tensors["b_dec"]) @ tensors["W_enc"] + tensors["b_enc"]) * norms
    top = pre.topk(k, dim=1)
    codes = torch.zeros_like(pre).scatter(1, top.indices, top.values.relu())
    return codes, (codes / norms) @ tensors["W_dec"] + tensors["b_dec"]


def held_out_raw_rows(workdir: Path) -> torch.Tensor:
    """The run's held-out rows that imports are measured on, as the site wrote them (not rescaled)."""
    from training.experiments.sweep_run import activation_source

    eval_rows = json.loads((workdir / "metrics.json").read_text())["config"]["eval_rows"]
    return activation_source(workdir).batch(-1_000_000, eval_rows)


def test_a_saelens_topk_with_its_defaults_imports_indexes_serves_and_exports_back(
    trained_run, tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("MONOSEMANTIC_DATABASE_URL", raising=False)
    fixture = FIXTURES / "saelens_topk_checkpoint"
    cfg = json.loads((fixture / "cfg.json").read_text())
    tensors = load_file(str(fixture / "sae_weights.safetensors"))
    rows = load_file(str(FIXTURES / "rows.safetensors"))["rows"]
    expected = load_file(str(FIXTURES / "saelens_topk_checkpoint.reference.safetensors"))
    # The formula below is SAELens's: it reproduces what the package computed on the fixture rows.
    codes, recon = saelens_topk_outputs(tensors, cfg["k"], rows)
    assert torch.allclose(codes, expected["codes"], atol=1e-5) and torch.allclose(recon, expected["recon"], atol=1e-5)

    args = ["sae", "import", str(fixture), "--format", "saelens", "--workdir", str(trained_run), "--name", "sl_topk"]
    assert main(args) == 0
    assert "folded rescale_acts_by_decoder_norm" in capsys.readouterr().out
    assert main(["index", "--workdir", str(trained_run), "--no-progress"]) == 0
    engine = make_engine(f"sqlite:///{trained_run / 'monosemantic.db'}")
    with make_sessionmaker(engine)() as session:
        served = session.query(Dictionary).filter_by(name="sl_topk").one()
        served_fvu, served_l0, source = served.fvu, served.l0, served.source_metadata
    engine.dispose()
    x = held_out_raw_rows(trained_run)
    codes, recon = saelens_topk_outputs(tensors, cfg["k"], x)
    saelens_fvu = float((x - recon).double().pow(2).sum() / (x.double() - x.double().mean(dim=0)).pow(2).sum())
    assert served_fvu == pytest.approx(saelens_fvu, rel=0.01)
    assert served_l0 == pytest.approx(float((codes > 0).sum(dim=1).float().mean()), rel=1e-3)
    assert source["cfg"] == cfg and source["metadata"] == cfg["metadata"]

    # Its config.json says what the weights determine, and none of our training defaults.
    stored = json.loads((trained_run / "imported" / "sl_topk" / "config.json").read_text())
    assert stored["config"] == {"arch": "topk", "d_in": 64, "dict_size": 128, "k": 8, "tag": "imported-sl_topk"}
    assert "not known" in stored["training"]

    out = tmp_path / "back"
    assert (
        main(
            [
                "sae",
                "export",
                "--workdir",
                str(trained_run),
                "--sae",
                "sl_topk",
                "--format",
                "saelens",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out / "cfg.json").read_text()) == cfg
    written = load_file(str(out / "sae_weights.safetensors"))
    codes, recon = saelens_topk_outputs(written, cfg["k"], rows)
    assert torch.equal(codes != 0, expected["codes"] != 0)
    assert torch.allclose(codes, expected["codes"], rtol=1e-4, atol=1e-4)
    assert torch.allclose(recon, expected["recon"], rtol=1e-4, atol=1e-4)


def test_a_sparsify_sae_round_trips_through_a_run_with_its_cfg_and_nothing_added(trained_run, tmp_path):
    fixture = FIXTURES / "sparsify" / "layers.2.mlp"
    folder, _ = import_run_sae(fixture, "sparsify", trained_run, "sp_topk")
    stored = json.loads((folder / "config.json").read_text())
    assert set(stored["config"]) == {"arch", "d_in", "dict_size", "k", "tag"}
    assert stored["source"]["metadata"] == {"hookpoint": "layers.2.mlp"}
    export_run_sae(trained_run, "sp_topk", "sparsify", tmp_path / "layers.2.mlp")
    assert json.loads((tmp_path / "layers.2.mlp" / "cfg.json").read_text()) == json.loads(
        (fixture / "cfg.json").read_text()
    )
    assert sorted(p.name for p in (tmp_path / "layers.2.mlp").iterdir()) == ["cfg.json", "sae.safetensors"]
    export_run_sae(trained_run, "sp_topk", "saelens", tmp_path / "as_saelens")
    metadata = json.loads((tmp_path / "as_saelens" / "cfg.json").read_text())["metadata"]
    assert "hook_name" not in metadata and metadata["hookpoint"] == "layers.2.mlp"
