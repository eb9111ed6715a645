"""Write the SAELens and sparsify fixtures of ``tests/data/formats/`` with the real packages, or check an export.

The suite checks our readers against folders these packages wrote and against the numbers they computed,
without installing either. Each package lives in its own throwaway virtualenv outside the repository
(``torch==2.13.0`` takes the CPU wheel):

    python3 -m venv /tmp/venv-saelens && /tmp/venv-saelens/bin/pip install torch==2.13.0 sae-lens==6.54.12
    python3 -m venv /tmp/venv-sparsify && /tmp/venv-sparsify/bin/pip install torch==2.13.0 eai-sparsify==1.3.3
    /tmp/venv-saelens/bin/python scripts/make_format_fixtures.py saelens tests/data/formats
    /tmp/venv-sparsify/bin/python scripts/make_format_fixtures.py sparsify tests/data/formats

Every SAE reads 64-dimensional rows (our layer's MLP width) and has 128 latents; weights are drawn from a
fixed seed after the package builds the SAE, with decoder rows of uneven norm as training leaves them, so
that SAELens's decoder-norm rescaling matters. Beside each folder, ``<name>.reference.safetensors`` holds
the package's own ``codes`` and ``recon`` on ``rows.safetensors``.

    /tmp/venv-saelens/bin/python scripts/make_format_fixtures.py check-saelens EXPORT_FOLDER REFERENCE
    /tmp/venv-sparsify/bin/python scripts/make_format_fixtures.py check-sparsify EXPORT_FOLDER REFERENCE

load a folder that ``monosemantic sae export`` wrote with the package and compare its outputs on the rows
with a reference file; the results of those checks are recorded in ``tests/data/formats/README.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

D_IN, D_SAE, K, ROWS, SEED = 64, 128, 8, 24, 30
HOOK = "blocks.2.mlp.act"


def _rows(out: Path) -> torch.Tensor:
    """The shared input rows: written once, read by the second package's run."""
    path = out / "rows.safetensors"
    if not path.exists():
        gen = torch.Generator().manual_seed(SEED)
        # Non-negative with a heavy tail and an offset, like post-GELU MLP activations.
        rows = torch.nn.functional.gelu(torch.randn(ROWS, D_IN, generator=gen) * 1.5 + 0.3)
        out.mkdir(parents=True, exist_ok=True)
        save_file({"rows": rows.contiguous()}, str(path))
    return load_file(str(path))["rows"]


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Replace every parameter by seeded random values: decoder rows of norms 0.3 to 3, thresholds 0.5 to 2.5."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(module.named_parameters()):
            values = torch.randn(param.shape, generator=gen) * 0.2
            if name == "W_dec":
                norms = torch.rand(param.shape[0], 1, generator=gen) * 2.7 + 0.3
                values = values / values.norm(dim=1, keepdim=True) * norms
            if "threshold" in name:
                values = torch.rand(param.shape, generator=gen) * 2 + 0.5
            param.copy_(values)


def _write_reference(path: Path, codes: torch.Tensor, recon: torch.Tensor, versions: dict) -> None:
    tensors = {"codes": codes.detach().float().contiguous(), "recon": recon.detach().float().contiguous()}
    save_file(tensors, str(path), metadata={k: str(v) for k, v in versions.items()})


def make_saelens(out: Path) -> list[str]:
    """SAELens SAEs as its training runner and its trainer's checkpoints save them."""
    import sae_lens
    from sae_lens import SAE
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    rows = _rows(out)
    versions = {"sae_lens": sae_lens.__version__, "torch": torch.__version__}

    def metadata() -> SAEMetadata:
        return SAEMetadata(model_name="tinylm", hook_name=HOOK, context_size=64, prepend_bos=False)

    def cfg(config_class, **fields):
        return config_class(d_in=D_IN, d_sae=D_SAE, metadata=metadata(), **fields)

    # (folder, training SAE, how it is saved): save_inference_model is what the runner writes at the end;
    # save_model is what the trainer writes for its checkpoints (weights unfolded, training fields kept).
    made = [
        ("saelens_topk", TopKTrainingSAE(cfg(TopKTrainingSAEConfig, k=K)), "inference"),
        ("saelens_topk_checkpoint", TopKTrainingSAE(cfg(TopKTrainingSAEConfig, k=K)), "checkpoint"),
        ("saelens_standard", StandardTrainingSAE(cfg(StandardTrainingSAEConfig)), "inference"),
        ("saelens_jumprelu", JumpReLUTrainingSAE(cfg(JumpReLUTrainingSAEConfig)), "inference"),
        ("saelens_batchtopk", BatchTopKTrainingSAE(cfg(BatchTopKTrainingSAEConfig, k=K)), "inference"),
    ]
    names = []
    for seed, (name, training_sae, how) in enumerate(made):
        _randomise(training_sae, SEED + seed)
        if name == "saelens_batchtopk":
            # A batch threshold as training learns it: the one that keeps k latents per row on average.
            with torch.no_grad():
                hidden_pre = training_sae.encode_with_hidden_pre(rows)[1]
            training_sae.topk_threshold.fill_(hidden_pre.flatten().topk(K * ROWS).values[-1].item())
        folder = out / name
        if how == "inference":
            training_sae.save_inference_model(str(folder))
        else:
            training_sae.save_model(str(folder))
        loaded = SAE.load_from_disk(str(folder))
        with torch.no_grad():
            codes = loaded.encode(rows)
            recon = loaded.decode(codes)
        _write_reference(out / f"{name}.reference.safetensors", codes, recon, versions | {"saved_by": how})
        names.append(name)
    return names


def make_sparsify(out: Path) -> list[str]:
    """A sparsify SAE as its trainer saves one hookpoint, with its config's defaults but for size and k."""
    from importlib.metadata import version

    from sparsify import Sae, SaeConfig

    rows = _rows(out)
    versions = {"eai-sparsify": version("eai-sparsify"), "torch": torch.__version__}
    sae = Sae(D_IN, SaeConfig(num_latents=D_SAE, k=K), device="cpu")
    _randomise(sae, SEED + 10)
    folder = out / "sparsify" / "layers.2.mlp"
    sae.save_to_disk(folder)
    loaded = Sae.load_from_disk(folder, device="cpu")
    with torch.no_grad():
        encoded = loaded.encode(rows)
        codes = torch.zeros(ROWS, D_SAE).scatter_(1, encoded.top_indices, encoded.top_acts)
        recon = loaded.decode(encoded.top_acts, encoded.top_indices)
    _write_reference(out / "sparsify.reference.safetensors", codes, recon, versions)
    return ["sparsify/layers.2.mlp"]


def check_saelens(folder: Path, reference: Path) -> dict:
    """Load ``folder`` with SAELens and compare its outputs on the fixture rows with ``reference``."""
    import sae_lens
    from sae_lens import SAE

    rows = _rows(reference.parent)
    expected = load_file(str(reference))
    loaded = SAE.load_from_disk(str(folder))
    with torch.no_grad():
        codes = loaded.encode(rows)
        recon = loaded.decode(codes)
    return {
        "sae_lens": sae_lens.__version__,
        "architecture": loaded.cfg.architecture(),
        "max_code_difference": float((codes - expected["codes"]).abs().max()),
        "max_recon_difference": float((recon - expected["recon"]).abs().max()),
        "same_active_latents": bool(((codes != 0) == (expected["codes"] != 0)).all()),
    }


def check_sparsify(folder: Path, reference: Path) -> dict:
    """Load ``folder`` with sparsify and compare its outputs on the fixture rows with ``reference``."""
    from importlib.metadata import version

    from sparsify import Sae

    rows = _rows(reference.parent)
    expected = load_file(str(reference))
    loaded = Sae.load_from_disk(folder, device="cpu")
    with torch.no_grad():
        encoded = loaded.encode(rows)
        codes = torch.zeros(ROWS, loaded.num_latents).scatter_(1, encoded.top_indices, encoded.top_acts)
        recon = loaded.decode(encoded.top_acts, encoded.top_indices)
    return {
        "eai-sparsify": version("eai-sparsify"),
        "max_code_difference": float((codes - expected["codes"]).abs().max()),
        "max_recon_difference": float((recon - expected["recon"]).abs().max()),
        "same_active_latents": bool(((codes != 0) == (expected["codes"] != 0)).all()),
    }


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] in ("saelens", "sparsify"):
        made = {"saelens": make_saelens, "sparsify": make_sparsify}[argv[0]](Path(argv[1]))
        print(f"wrote {', '.join(made)} to {argv[1]}")
        return 0
    if len(argv) == 3 and argv[0] in ("check-saelens", "check-sparsify"):
        check = {"check-saelens": check_saelens, "check-sparsify": check_sparsify}[argv[0]]
        print(json.dumps(check(Path(argv[1]), Path(argv[2]))))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
