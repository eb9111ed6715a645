"""SAEs in and out of a run directory: export one of its SAEs in a field format, import a foreign one.

An imported SAE is converted to our form on the run's rescaled rows (exactly, see ``raw``) and saved in
``<run>/imported/<name>/`` with a ``source`` record (format, path, the original ``cfg.json`` and metadata as
written, what reading folded) and its metrics on the run's held-out rows, measured as the sweep measures
ours. Its ``config.json`` states only what the weights determine (architecture, sizes, k); how it was
trained is not known here, so none of our training settings are written for it. The feature index picks it
up like a trained dictionary; the sweep's own folders (``saes/``) are never touched, so ``run`` and
``train`` resume and check their sweeps exactly as before. Exporting an imported SAE writes its source's
config fields and metadata back as they were.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from training.analysis.metrics import evaluate
from training.experiments.pipeline import ScaledSource
from training.experiments.sweep_run import activation_source
from training.formats.raw import FormatError, RawSAE, finite_scale, from_raw, to_raw
from training.formats.saelens import read_saelens, write_saelens
from training.formats.sparsify import read_sparsify, write_sparsify
from training.saes import SparseAutoencoder, load_sae

Format = Literal["saelens", "sparsify"]
FORMATS: tuple[str, ...] = ("saelens", "sparsify")
IMPORTED_DIR = "imported"
SOURCE_KEY = "source"
DEFAULT_EVAL_ROWS = 20_000
# The SAEConfig fields an imported SAE's weights determine; the rest describe a training we did not run.
KNOWN_CONFIG_FIELDS = ("arch", "d_in", "dict_size", "k", "l1", "tag")
UNKNOWN_NOTE = (
    "trained elsewhere: its training settings are not known here; source.cfg and source.metadata hold what "
    "its files state, and l1 0 only stands in for a sparsity penalty that the format does not record"
)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def sae_folders(workdir: Path) -> dict[str, Path]:
    """Every SAE of a run by name: the sweep's (``saes/saes/``) and the imported ones (``imported/``)."""
    found = {}
    for pattern in ("saes/saes/*/sae.safetensors", f"{IMPORTED_DIR}/*/sae.safetensors"):
        for weights in sorted(Path(workdir).glob(pattern)):
            found[weights.parent.name] = weights.parent
    return found


def _run_scale(workdir: Path):
    try:
        source = activation_source(Path(workdir))
    except FileNotFoundError as exc:
        raise FormatError(str(exc)) from exc
    return source, finite_scale(float(source.manifest.mean_sq_norm) ** -0.5)


def _run_metadata(workdir: Path, manifest) -> dict:
    """What we know of where a run's SAEs were trained, in SAELens's metadata keys."""
    metadata = {
        "model_name": getattr(manifest, "model", "tinylm"),
        "hook_name": manifest.module,
        "hook_layer": manifest.layer,
        "context_size": manifest.context,
        "prepend_bos": False,
    }
    tokens = Path(workdir) / "tokens" / "manifest.json"
    if tokens.exists():
        try:
            metadata["dataset_path"] = json.loads(tokens.read_text()).get("corpus")
        except (OSError, json.JSONDecodeError):
            pass
    return {key: value for key, value in metadata.items() if value is not None}


def export_run_sae(workdir: Path, sae_name: str, fmt: Format, out: Path) -> RawSAE:
    """Write SAE ``sae_name`` of the run as a ``fmt`` folder at ``out`` that works on the site's raw activations."""
    folders = sae_folders(workdir)
    if sae_name not in folders:
        known = ", ".join(sorted(folders)) or "none (train the run first)"
        raise FormatError(f"no SAE named {sae_name!r} in {workdir}: the run has {known}")
    source, scale = _run_scale(workdir)
    sae = load_sae(folders[sae_name])
    previous = source_record(folders[sae_name])
    if previous:
        # As its source wrote it: nothing of this run's is added to an SAE trained elsewhere.
        written = previous.get("metadata", {})
        raw = to_raw(sae, scale, written)
        if "monosemantic_arch" not in written:
            del raw.metadata["monosemantic_arch"]
        raw.source_format, raw.source_cfg = previous.get("format"), previous.get("cfg")
    else:
        raw = to_raw(sae, scale, _run_metadata(workdir, source.manifest))
    if sae.config.arch == "batchtopk":
        raw.metadata["monosemantic_note"] = "batchtopk served as jumprelu with its batch threshold for every latent"
    writer = {"saelens": write_saelens, "sparsify": write_sparsify}[fmt]
    writer(raw, Path(out))
    return raw


def read_foreign(path: Path, fmt: Format) -> RawSAE:
    """The SAE of a folder in a field format."""
    if fmt not in FORMATS:
        raise FormatError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return {"saelens": read_saelens, "sparsify": read_sparsify}[fmt](Path(path))


def source_record(folder: Path) -> dict | None:
    """The ``source`` record of an imported SAE's folder; None for one trained here."""
    meta = json.loads((folder / "config.json").read_text())
    return meta.get(SOURCE_KEY)


def import_run_sae(
    path: Path, fmt: Format, workdir: Path, name: str | None = None, check_hook: bool = True
) -> tuple[Path, dict]:
    """Import the SAE at ``path`` into the run; its folder and its metrics on the run's held-out rows."""
    workdir = Path(workdir)
    raw = read_foreign(path, fmt)
    source, scale = _run_scale(workdir)
    width = int(source.dim)
    if raw.d_in != width:
        raise FormatError(f"the SAE reads {raw.d_in}-dimensional inputs but {workdir}'s activations have {width}")
    hook = raw.metadata.get("hook_name")
    if check_hook and hook and hook != source.manifest.module:
        raise FormatError(
            f"the SAE was trained on {hook!r} but {workdir}'s activations are {source.manifest.module!r}: "
            "import it into a run harvested at that module, or pass --no-hook-check if they are the same site"
        )
    name = name or f"{fmt}_{raw.arch}_n{raw.d_sae}" + (f"_k{raw.k}" if raw.k else "")
    if not NAME_PATTERN.fullmatch(name):
        raise FormatError(f"name {name!r}: use letters, digits, '_', '.' and '-' (at most 100)")
    if name in sae_folders(workdir):
        raise FormatError(f"{workdir} already has an SAE named {name!r}: pass --name to choose another")
    sae = from_raw(raw, scale, tag=f"imported-{name}")
    metrics = _evaluate(sae, source, workdir)
    folder = workdir / IMPORTED_DIR / name
    record = {
        "format": fmt,
        "path": str(Path(path).resolve()),
        "architecture": raw.arch,
        "metadata": raw.metadata,
        "cfg": raw.source_cfg,
        "conversions": raw.conversions,
    }
    sae.save(folder, extra={SOURCE_KEY: record, "metrics": metrics})
    _state_only_what_is_known(folder)
    return folder, metrics


def _state_only_what_is_known(folder: Path) -> None:
    """Rewrite an imported SAE's ``config.json`` with the config fields its weights determine and no others."""
    path = folder / "config.json"
    meta = json.loads(path.read_text())
    config = {key: meta["config"][key] for key in KNOWN_CONFIG_FIELDS if meta["config"].get(key) is not None}
    meta["config"] = config
    meta["training"] = UNKNOWN_NOTE
    path.write_text(json.dumps(meta, indent=2))


def _evaluate(sae: SparseAutoencoder, source, workdir: Path) -> dict:
    """L0, FVU and dead fraction on the held-out rows the run's own sweep was evaluated on."""
    eval_rows = DEFAULT_EVAL_ROWS
    metrics_path = workdir / "metrics.json"
    if metrics_path.exists():
        try:
            eval_rows = int(json.loads(metrics_path.read_text()).get("config", {}).get("eval_rows", eval_rows))
        except (OSError, json.JSONDecodeError, TypeError, ValueError):
            pass
    held_out = ScaledSource(source).batch(-1_000_000, eval_rows)
    evaluation = evaluate(sae, held_out)
    return {
        "l0": evaluation.l0,
        "fvu": evaluation.fvu,
        "dead_fraction": evaluation.dead_fraction,
        "eval_rows": eval_rows,
    }


def imported_records(workdir: Path) -> dict[str, dict]:
    """Per imported SAE name: its ``source`` record and its ``metrics``."""
    records = {}
    for weights in sorted(Path(workdir).glob(f"{IMPORTED_DIR}/*/sae.safetensors")):
        meta = json.loads((weights.parent / "config.json").read_text())
        if SOURCE_KEY in meta:
            records[weights.parent.name] = {SOURCE_KEY: meta[SOURCE_KEY], "metrics": meta.get("metrics", {})}
    return records
