"""The live inspector: which features of a dictionary fire on a text the user types.

The text goes through the run's own tokenizer and tiny LM up to the dictionary's site, and the hidden
states are scaled exactly as in training (``training.experiments.pipeline.ScaledSource``: times ``mean_sq_norm ** -0.5``
of the harvested activations) before the SAE encodes them, so activations here match the feature pages.
Models are loaded on first use and kept: a run's LM and tokenizer are shared by all its dictionaries.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from app.db.models import Dictionary
from app.services.schemas import ActivationsOut, FeatureActivation, TokenActivations
from training.activations.harvest import load_activations, module_activations, site_module
from training.data.tokenizer import load_tokenized
from training.features.index import INDEX_META, file_hash
from training.lm.tinylm import TinyLM, load_lm
from training.saes import SparseAutoencoder, load_sae

TOP_FEATURES_PER_TOKEN = 5
SUPPORTED_MODEL = "tinylm"


class InspectorUnavailable(RuntimeError):
    """The run's models cannot be loaded for this dictionary; the message says why and what to do."""


@dataclass
class RunModels:
    """A run's tokenizer and LM, and the scale its SAEs were trained at."""

    tokenizer: Tokenizer
    eos_id: int
    lm: TinyLM
    scale: float


class ActivationInspector:
    """Runs texts through a dictionary's LM and SAE on ``device``, loading each model once (thread-safe)."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._runs: dict[str, RunModels] = {}
        self._saes: dict[str, SparseAutoencoder] = {}
        self._lock = threading.Lock()

    def inspect(self, dictionary: Dictionary, text: str, feature: int | None = None) -> ActivationsOut:
        """Every token of text with its strongest features (and ``feature``'s activation when given)."""
        if dictionary.model != SUPPORTED_MODEL or dictionary.layer is None:
            raise InspectorUnavailable(
                f"dictionary {dictionary.id} was trained on {dictionary.model!r}; the inspector runs only the "
                f"{SUPPORTED_MODEL} of a monosemantic run"
            )
        run, sae = self._load(dictionary)
        encoding = run.tokenizer.encode(text, add_special_tokens=False)
        # Documents start with the end-of-text token in training, so the first real token has a predecessor.
        ids = torch.tensor([run.eos_id, *encoding.ids], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            hidden = _windowed_hidden(run.lm, site_module(dictionary.layer, dictionary.site), ids)[1:]
            codes = sae.encode(hidden * run.scale)
            k = min(TOP_FEATURES_PER_TOKEN, codes.shape[1])
            values, indices = codes.topk(k, dim=1) if len(codes) else (codes[:, :0], codes[:, :0].long())
            codes, values, indices = codes.cpu(), values.cpu(), indices.cpu()
        chosen = codes[:, feature].tolist() if feature is not None else None
        tokens = []
        for i, (start, end) in enumerate(encoding.offsets):
            top = [
                FeatureActivation(index=int(j), activation=float(v))
                for v, j in zip(values[i].tolist(), indices[i].tolist(), strict=True)
                if v > 0
            ]
            tokens.append(
                TokenActivations(
                    token=text[start:end],
                    start=start,
                    end=end,
                    top_features=top,
                    feature_activation=chosen[i] if chosen is not None else None,
                )
            )
        return ActivationsOut(dictionary_id=dictionary.id, feature=feature, tokens=tokens)

    def _load(self, dictionary: Dictionary) -> tuple[RunModels, SparseAutoencoder]:
        run_dir = Path(dictionary.run_dir)
        with self._lock:
            run_key = str(run_dir.resolve())
            if run_key not in self._runs:
                run = _load_run(run_dir)
                run.lm.to(self.device)
                self._runs[run_key] = run
            if dictionary.content_hash not in self._saes:
                self._saes[dictionary.content_hash] = _load_dictionary_sae(dictionary).to(self.device)
            return self._runs[run_key], self._saes[dictionary.content_hash]


def _windowed_hidden(lm: TinyLM, module: str, ids: torch.Tensor) -> torch.Tensor:
    """Hidden states (n x d) of ids, read in consecutive windows of the LM's context, as the harvest does."""
    context = lm.config.context
    full = len(ids) // context * context
    parts = []
    if full:
        parts.append(module_activations(lm, module, ids[:full].view(-1, context)).reshape(full, -1))
    if full < len(ids):
        parts.append(module_activations(lm, module, ids[full:][None])[0])
    return torch.cat(parts).float()


def _load_run(run_dir: Path) -> RunModels:
    """The tokenizer, LM and activation scale of a run directory, or InspectorUnavailable naming what is missing."""
    try:
        tokens = load_tokenized(run_dir / "tokens")
        lm = load_lm(run_dir / "lm")
        _, manifest = load_activations(run_dir / "activations", "train")
    except (OSError, ValueError, KeyError) as exc:
        raise InspectorUnavailable(
            f"the models of run {run_dir} cannot be loaded ({exc}): rebuild the run with `monosemantic run`"
        ) from exc
    if manifest.mean_sq_norm <= 0:
        raise InspectorUnavailable(f"activations of run {run_dir} have zero norm: rebuild the run")
    return RunModels(tokenizer=tokens.tokenizer, eos_id=tokens.eos_id, lm=lm, scale=manifest.mean_sq_norm**-0.5)


def _load_dictionary_sae(dictionary: Dictionary) -> SparseAutoencoder:
    """The SAE of a dictionary: its artifact folder is the SAE's folder or a feature index naming it."""
    run_dir, artifact = Path(dictionary.run_dir), Path(dictionary.artifact_dir)
    folder = artifact if artifact.is_absolute() else run_dir / artifact
    try:
        if not (folder / "sae.safetensors").exists() and (folder / INDEX_META).exists():
            folder = run_dir / json.loads((folder / INDEX_META).read_text())["sae_dir"]
        weights_hash = file_hash(folder / "sae.safetensors")
        sae = load_sae(folder)
    except (OSError, ValueError, KeyError) as exc:
        raise InspectorUnavailable(
            f"the SAE of dictionary {dictionary.id} cannot be loaded ({exc}): rebuild the run with `monosemantic run`"
        ) from exc
    if weights_hash != dictionary.content_hash:
        raise InspectorUnavailable(
            f"the SAE in {folder} changed since dictionary {dictionary.id} was indexed: re-index the run with "
            "`monosemantic index`"
        )
    return sae
