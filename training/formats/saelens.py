"""SAELens's on-disk layout: a folder with ``cfg.json`` and ``sae_weights.safetensors``.

Written as SAELens 6's ``SAE.save_model`` does (``metadata`` nested); read from that layout and from
pre-6.0 files (``hook_name``, ``model_name`` and the like at the top level, ``activation_fn_str`` for
top-k). Only what loads faithfully is accepted: input normalisations that depend on statistics the
folder does not hold, and top-k SAEs that rescale by decoder norms, are refused with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from training.formats.raw import FormatError, RawSAE

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SAE_LENS_VERSION = "6.0.0"  # the layout we write, checked against SAELens 6's save_model
METADATA_KEYS = ("model_name", "hook_name", "hook_layer", "context_size", "prepend_bos", "dataset_path")


def write_saelens(raw: RawSAE, folder: Path) -> None:
    """Write ``raw`` as a SAELens 6 SAE folder."""
    raw.check_shapes()
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"W_enc": raw.W_enc, "W_dec": raw.W_dec, "b_enc": raw.b_enc, "b_dec": raw.b_dec}
    if raw.arch == "jumprelu":
        tensors["threshold"] = raw.threshold
    save_file({name: t.detach().float().contiguous() for name, t in tensors.items()}, str(folder / WEIGHTS_FILE))
    cfg = {
        "architecture": raw.arch,
        "d_in": raw.d_in,
        "d_sae": raw.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"sae_lens_version": SAE_LENS_VERSION, **raw.metadata},
    }
    if raw.arch == "topk":
        cfg |= {"k": raw.k, "rescale_acts_by_decoder_norm": False}
    (folder / CFG_FILE).write_text(json.dumps(cfg, indent=2))


def read_cfg(path: Path) -> dict:
    """A format's ``cfg.json`` as a dict, or a FormatError that says what is wrong with the file."""
    if not path.exists():
        raise FormatError(f"{path} is missing")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(cfg, dict):
        raise FormatError(f"{path} holds no JSON object")
    return cfg


def read_tensors(path: Path, required: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The float32 tensors of a safetensors file, which must hold ``required``."""
    if not path.exists():
        raise FormatError(f"{path} is missing")
    try:
        tensors = {name: t.float() for name, t in load_file(str(path)).items()}
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise FormatError(f"{path} is unreadable: {exc}") from exc
    missing = [name for name in required if name not in tensors]
    if missing:
        raise FormatError(f"{path} lacks tensors {', '.join(missing)}")
    return tensors


def _architecture(cfg: dict) -> tuple[str, int | None]:
    """The architecture and k, from SAELens 6 keys or pre-6.0 ``activation_fn_str``."""
    arch = cfg.get("architecture", "standard")
    k = cfg.get("k")
    activation = cfg.get("activation_fn_str") or cfg.get("activation_fn")
    if arch == "standard" and activation == "topk":
        arch, k = "topk", (cfg.get("activation_fn_kwargs") or {}).get("k", k)
    elif activation not in (None, "relu", "topk"):
        raise FormatError(f"activation function {activation!r} is not supported: relu and topk are")
    if arch not in ("standard", "topk", "jumprelu"):
        raise FormatError(
            f"SAELens architecture {arch!r} is not supported: standard, topk and jumprelu are "
            "(gated and other architectures have no equivalent here)"
        )
    return arch, k


def read_saelens(folder: Path) -> RawSAE:
    """The SAE in a SAELens folder, on raw activations; FormatError when it cannot be read faithfully."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FormatError(f"{folder} is not a folder")
    cfg = read_cfg(folder / CFG_FILE)
    for key in ("d_in", "d_sae"):
        if not isinstance(cfg.get(key), int) or cfg[key] <= 0:
            raise FormatError(f"{folder / CFG_FILE}: {key} must be a positive integer, got {cfg.get(key)!r}")
    arch, k = _architecture(cfg)
    normalize = cfg.get("normalize_activations", "none") or "none"
    if normalize != "none":
        raise FormatError(
            f"normalize_activations {normalize!r} rescales inputs by statistics this folder does not hold: "
            "fold the scaling into the weights in SAELens first (the weights must then work on raw activations)"
        )
    if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
        raise FormatError("rescale_acts_by_decoder_norm is not supported: fold the decoder norms in SAELens first")
    required = ("W_enc", "W_dec", "b_enc", "b_dec") + (("threshold",) if arch == "jumprelu" else ())
    tensors = read_tensors(folder / WEIGHTS_FILE, required)
    if cfg.get("apply_b_dec_to_input", True) is False:
        # pre = x @ W_enc + b_enc is (x - b_dec) @ W_enc + (b_enc + b_dec @ W_enc).
        tensors["b_enc"] = tensors["b_enc"] + tensors["b_dec"] @ tensors["W_enc"]
    metadata = dict(cfg.get("metadata") or {})
    for key in METADATA_KEYS:
        if key in cfg and key not in metadata:
            metadata[key] = cfg[key]
    raw = RawSAE(
        arch=arch,
        W_enc=tensors["W_enc"],
        b_enc=tensors["b_enc"],
        W_dec=tensors["W_dec"],
        b_dec=tensors["b_dec"],
        k=k,
        threshold=tensors.get("threshold"),
        metadata=metadata,
    )
    if (raw.d_in, raw.d_sae) != (cfg["d_in"], cfg["d_sae"]):
        raise FormatError(
            f"{folder}: W_enc is {raw.d_in} x {raw.d_sae} but cfg.json says d_in={cfg['d_in']}, d_sae={cfg['d_sae']}"
        )
    raw.check_shapes()
    return raw
