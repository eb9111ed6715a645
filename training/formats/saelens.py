"""SAELens's on-disk layout: a folder with ``cfg.json`` and ``sae_weights.safetensors``.

Written as SAELens 6's ``SAE.save_model`` does (``metadata`` nested); read from that layout (as its runner's
``save_inference_model`` and its trainer's checkpoints write it) and from pre-6.0 files (``hook_name``,
``model_name`` and the like at the top level, ``activation_fn_str`` for top-k). Every option of a SAELens 6
``cfg.json`` is either reproduced exactly or refused by name: ``apply_b_dec_to_input: false`` and
``rescale_acts_by_decoder_norm: true`` fold into the weights by the same algebra SAELens uses; input
normalisations, attention-head reshaping and architectures with no equivalent here are refused with the
reason. An SAE read from a SAELens folder is written back with its ``cfg.json`` as it was.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from training.formats.raw import FormatError, RawSAE

FORMAT = "saelens"
CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SAE_LENS_VERSION = "6.0.0"  # the layout we write, checked against SAELens 6's save_model
METADATA_KEYS = ("model_name", "hook_name", "hook_layer", "context_size", "prepend_bos", "dataset_path")
ARCHITECTURES = ("standard", "topk", "jumprelu")
# SAELens 6 architectures with no equivalent here, and why.
REFUSED_ARCHITECTURES = {
    "gated": "its gate and magnitude paths have no equivalent here",
    "abstopk": "it keeps the k largest absolute pre-activations, signs included",
    "batchtopk": "this is a training checkpoint: save it with SAELens's save_inference_model, which writes jumprelu",
    "matryoshka_batchtopk": (
        "this is a training checkpoint: save it with SAELens's save_inference_model, which writes jumprelu"
    ),
    "transcoder": "a transcoder predicts another site's activations, not its own input",
    "skip_transcoder": "a transcoder predicts another site's activations, not its own input",
    "jumprelu_transcoder": "a transcoder predicts another site's activations, not its own input",
    "jumprelu_skip_transcoder": "a transcoder predicts another site's activations, not its own input",
    "temporal": "its codes depend on earlier tokens through attention",
    "matching_pursuit": "its codes come from an iterative pursuit, not one encoder pass",
}
# Options that change how an SAE encodes or decodes; each is handled in read_saelens.
INFERENCE_OPTIONS = frozenset(
    {
        "architecture",
        "d_in",
        "d_sae",
        "dtype",
        "apply_b_dec_to_input",
        "normalize_activations",
        "reshape_activations",
        "k",
        "rescale_acts_by_decoder_norm",
        "activation_fn_str",
        "activation_fn",
        "activation_fn_kwargs",
        "finetuning_scaling_factor",
        "hook_head_index",
        "hook_point_head_index",
    }
)
# Options that say where an SAE was loaded or how it was trained, never how it computes (SAELens's own
# loader drops the training ones); kept as written, used for nothing.
DESCRIPTIVE_OPTIONS = frozenset(
    {
        "device",
        "metadata",
        "sae_lens_version",
        "sae_lens_training_version",
        "decoder_init_norm",
        "use_sparse_activations",
        "aux_loss_coefficient",
        "l1_coefficient",
        "lp_norm",
        "l1_warm_up_steps",
        "jumprelu_init_threshold",
        "jumprelu_bandwidth",
        "jumprelu_sparsity_loss_mode",
        "l0_coefficient",
        "l0_warm_up_steps",
        "pre_act_loss_coefficient",
        "jumprelu_tanh_scale",
        "jumprelu_ste_to_input",
        "target_l0",
        "topk_threshold_lr",
        "neuronpedia_id",
    }
)
NORMALIZATION_FIXES = {
    "expected_average_only_in": "fold its scaling factor into the weights with SAELens's "
    "fold_activation_norm_scaling_factor and save again",
    "covariance_whitening": "fold the whitening into the weights with SAELens's fold_activation_whitening "
    "and save again",
    "constant_norm_rescale": "it rescales every row by its own norm, which no affine SAE reproduces",
    "layer_norm": "it layer-normalises every row, which no affine SAE reproduces",
}
TENSORS = ("W_enc", "W_dec", "b_enc", "b_dec")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def write_saelens(raw: RawSAE, folder: Path) -> None:
    """Write ``raw`` as a SAELens 6 SAE folder; one read from SAELens gets its own ``cfg.json`` back."""
    raw.check_shapes()
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"W_enc": raw.W_enc, "W_dec": raw.W_dec, "b_enc": raw.b_enc, "b_dec": raw.b_dec}
    if raw.arch == "jumprelu":
        tensors["threshold"] = raw.threshold
    cfg = _source_cfg(raw)
    if cfg is None:
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
    elif cfg.get("apply_b_dec_to_input", True) is False:
        # Undo the fold of read_saelens: x @ W_enc + b_enc with b_enc = ours - b_dec @ W_enc.
        tensors["b_enc"] = raw.b_enc - raw.b_dec @ raw.W_enc
    # With rescale_acts_by_decoder_norm kept true, the unit-norm decoder rows of the folded weights make
    # SAELens's rescaling a multiplication by one, as in the files its own save_inference_model writes.
    dtype = DTYPES.get(str(cfg.get("dtype", "float32")).removeprefix("torch."), torch.float32)
    save_file({name: t.detach().to(dtype).contiguous() for name, t in tensors.items()}, str(folder / WEIGHTS_FILE))
    (folder / CFG_FILE).write_text(json.dumps(cfg, indent=2))


def _source_cfg(raw: RawSAE) -> dict | None:
    """The SAELens ``cfg.json`` ``raw`` was read from, with its metadata as ``raw`` holds it now, if any."""
    if raw.source_format != FORMAT or not raw.source_cfg:
        return None
    cfg = copy.deepcopy(raw.source_cfg)
    if isinstance(cfg.get("metadata"), dict):
        cfg["metadata"] = dict(raw.metadata)
    return cfg


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


def _is_v6(cfg: dict) -> bool:
    version = cfg.get("sae_lens_version") or (cfg.get("metadata") or {}).get("sae_lens_version")
    try:
        return int(str(version).split(".")[0]) >= 6
    except ValueError:
        return False


def _architecture(cfg: dict) -> tuple[str, int | None]:
    """The architecture and k, from SAELens 6 keys or pre-6.0 ``activation_fn_str``."""
    arch = cfg.get("architecture", "standard")
    k = cfg.get("k")
    activation = cfg.get("activation_fn_str") or cfg.get("activation_fn")
    if arch == "standard" and activation == "topk":
        arch, k = "topk", (cfg.get("activation_fn_kwargs") or {}).get("k", k)
    elif activation not in (None, "relu", "topk"):
        raise FormatError(f"activation function {activation!r} is not supported: relu and topk are")
    if arch in REFUSED_ARCHITECTURES:
        raise FormatError(f"SAELens architecture {arch!r} is not supported: {REFUSED_ARCHITECTURES[arch]}")
    if arch not in ARCHITECTURES:
        raise FormatError(f"SAELens architecture {arch!r} is not supported: {', '.join(ARCHITECTURES)} are")
    if arch == "topk" and (not isinstance(k, int) or k <= 0):
        raise FormatError(f"a topk SAE needs a positive integer k in cfg.json, got {k!r}")
    return arch, k


def _check_options(cfg: dict, path: Path) -> None:
    """Refuse, by name, every option that changes encoding and that no exact conversion reproduces."""
    if _is_v6(cfg):
        unknown = sorted(set(cfg) - INFERENCE_OPTIONS - DESCRIPTIVE_OPTIONS)
        if unknown:
            raise FormatError(
                f"{path}: option {', '.join(map(repr, unknown))} is not one this importer knows, so it cannot "
                "say whether the SAE would compute the same codes here: check the SAELens version"
            )
    normalize = cfg.get("normalize_activations", "none") or "none"
    if normalize != "none":
        fix = NORMALIZATION_FIXES.get(normalize, "this importer does not know it")
        raise FormatError(f"normalize_activations {normalize!r} is not supported: {fix}")
    if (cfg.get("reshape_activations") or "none") != "none":
        raise FormatError(
            f"reshape_activations {cfg['reshape_activations']!r} is not supported: it reads attention heads' "
            "outputs reshaped per head, and runs here hold one flat row per token of a module's output"
        )
    for key in ("hook_head_index", "hook_point_head_index"):
        if cfg.get(key) is not None:
            raise FormatError(f"{key} {cfg[key]!r} is not supported: it reads one attention head's slice")
    if cfg.get("finetuning_scaling_factor"):
        raise FormatError("finetuning_scaling_factor is not supported: fold the scaling factor in SAELens first")


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
    _check_options(cfg, folder / CFG_FILE)
    tensors = read_tensors(folder / WEIGHTS_FILE, TENSORS)
    if arch == "jumprelu" and "threshold" not in tensors and "log_threshold" in tensors:
        # Older JumpReLU checkpoints store the log; SAELens converts it the same way on loading.
        tensors["threshold"] = tensors.pop("log_threshold").exp()
    expected = set(TENSORS) | ({"threshold"} if arch == "jumprelu" else set())
    if arch == "jumprelu" and "threshold" not in tensors:
        raise FormatError(f"{folder / WEIGHTS_FILE} lacks tensors threshold")
    extra = sorted(set(tensors) - expected)
    if extra:
        raise FormatError(
            f"{folder / WEIGHTS_FILE} holds {', '.join(extra)}, which a {arch} SAE does not use: "
            "it was saved by an architecture this importer does not know"
        )
    conversions = []
    if cfg.get("apply_b_dec_to_input", True) is False:
        # pre = x @ W_enc + b_enc is (x - b_dec) @ W_enc + (b_enc + b_dec @ W_enc).
        tensors["b_enc"] = tensors["b_enc"] + tensors["b_dec"] @ tensors["W_enc"]
        conversions.append("apply_b_dec_to_input false: b_dec @ W_enc into b_enc")
    if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
        # SAELens ranks pre * |W_dec row| and decodes codes / |W_dec row|: its fold_W_dec_norm gives the same
        # codes with the norms in the encoder and unit-norm decoder rows.
        norms = tensors["W_dec"].norm(dim=-1)
        tensors["W_enc"] = tensors["W_enc"] * norms
        tensors["b_enc"] = tensors["b_enc"] * norms
        tensors["W_dec"] = tensors["W_dec"] / norms.clamp(min=1e-8).unsqueeze(1)
        conversions.append(
            "rescale_acts_by_decoder_norm true: decoder norms into the encoder, as SAELens's fold_W_dec_norm does"
        )
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
        source_format=FORMAT,
        source_cfg=cfg,
        conversions=conversions,
    )
    if (raw.d_in, raw.d_sae) != (cfg["d_in"], cfg["d_sae"]):
        raise FormatError(
            f"{folder}: W_enc is {raw.d_in} x {raw.d_sae} but cfg.json says d_in={cfg['d_in']}, d_sae={cfg['d_sae']}"
        )
    raw.check_shapes()
    return raw
