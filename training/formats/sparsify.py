"""EleutherAI sparsify's on-disk layout: a folder (one per hookpoint) with ``cfg.json`` and ``sae.safetensors``.

sparsify's SAEs are top-k: ``encoder.weight`` is ``W_enc`` transposed, ``W_dec`` has our orientation,
and encoding takes the top k of ``relu((x - b_dec) @ encoder.weight.T + encoder.bias)``. Group-max
activations, skip connections and transcoders have no equivalent here and are refused. The folder's name is
its hookpoint, as sparsify's ``load_many`` reads it; an SAE read from a sparsify folder is written back with
its ``cfg.json`` as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from training.formats.raw import FormatError, RawSAE
from training.formats.saelens import read_cfg, read_tensors

FORMAT = "sparsify"
CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"
METADATA_FILE = "monosemantic_metadata.json"
# What the layout itself says, so it is not repeated in the metadata file.
LAYOUT_METADATA = ("hookpoint",)
SPARSIFY_EXPANSION_FACTOR = 32  # sparsify's default, used when num_latents is 0 or absent


def write_sparsify(raw: RawSAE, folder: Path) -> None:
    """Write a top-k ``raw`` as a sparsify SAE folder; other architectures are a FormatError."""
    raw.check_shapes()
    if raw.arch != "topk":
        arch = raw.metadata.get("monosemantic_arch") or {"standard": "relu"}.get(raw.arch, raw.arch)
        raise FormatError(
            f"sparsify's layout holds top-k SAEs only, and this one is {arch}: export it with --format saelens"
        )
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        "encoder.weight": raw.W_enc.T,
        "encoder.bias": raw.b_enc,
        "W_dec": raw.W_dec,
        "b_dec": raw.b_dec,
    }
    save_file({name: t.detach().float().contiguous() for name, t in tensors.items()}, str(folder / WEIGHTS_FILE))
    (folder / CFG_FILE).write_text(json.dumps(_source_cfg(raw), indent=2))
    metadata = {key: value for key, value in raw.metadata.items() if key not in LAYOUT_METADATA}
    if metadata:
        (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2))


def _source_cfg(raw: RawSAE) -> dict:
    """The sparsify ``cfg.json`` ``raw`` was read from, or the one its trainer would write for this SAE."""
    if raw.source_format == FORMAT and raw.source_cfg:
        return dict(raw.source_cfg)
    return {
        "activation": "topk",
        "expansion_factor": max(1, raw.d_sae // raw.d_in),
        "normalize_decoder": False,
        "num_latents": raw.d_sae,
        "k": raw.k,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": raw.d_in,
    }


def read_sparsify(folder: Path) -> RawSAE:
    """The top-k SAE in a sparsify folder, on raw activations; FormatError when it cannot be read faithfully."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FormatError(f"{folder} is not a folder")
    cfg = read_cfg(folder / CFG_FILE)
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise FormatError(f"sparsify activation {activation!r} is not supported: only topk is")
    for key in ("skip_connection", "transcode"):
        if cfg.get(key):
            raise FormatError(f"sparsify SAEs with {key} have no equivalent here")
    k = cfg.get("k")
    if not isinstance(k, int) or k <= 0:
        raise FormatError(f"{folder / CFG_FILE}: k must be a positive integer, got {k!r}")
    tensors = read_tensors(folder / WEIGHTS_FILE, ("encoder.weight", "encoder.bias", "W_dec", "b_dec"))
    W_enc = tensors["encoder.weight"].T.contiguous()
    d_in = cfg.get("d_in", W_enc.shape[0])
    num_latents = cfg.get("num_latents") or d_in * cfg.get("expansion_factor", SPARSIFY_EXPANSION_FACTOR)
    if (W_enc.shape[0], W_enc.shape[1]) != (d_in, num_latents):
        raise FormatError(
            f"{folder}: encoder.weight is {W_enc.shape[1]} x {W_enc.shape[0]} but cfg.json gives "
            f"num_latents={num_latents}, d_in={d_in}"
        )
    metadata_path = folder / METADATA_FILE
    metadata = json.loads(metadata_path.read_text()) if metadata_path.exists() else {}
    metadata["hookpoint"] = folder.name
    raw = RawSAE(
        arch="topk",
        W_enc=W_enc,
        b_enc=tensors["encoder.bias"],
        W_dec=tensors["W_dec"],
        b_dec=tensors["b_dec"],
        k=k,
        metadata=metadata,
        source_format=FORMAT,
        source_cfg=cfg,
    )
    raw.check_shapes()
    return raw
