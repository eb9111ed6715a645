"""Sparse autoencoder architectures, chosen by name through ``REGISTRY``."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from training.saes.base import SAEConfig, SparseAutoencoder, StepStats
from training.saes.batchtopk import BatchTopKSAE
from training.saes.jumprelu import JumpReluSAE
from training.saes.relu import ReluSAE
from training.saes.tied import TiedSAE
from training.saes.topk import TopKSAE

REGISTRY: dict[str, type[SparseAutoencoder]] = {
    cls.arch: cls for cls in (ReluSAE, TiedSAE, TopKSAE, BatchTopKSAE, JumpReluSAE)
}
ARCHS = tuple(REGISTRY)


def build_sae(config: SAEConfig) -> SparseAutoencoder:
    """A freshly initialised SAE of the architecture the config names."""
    if config.arch not in REGISTRY:
        raise ValueError(f"unknown arch {config.arch!r}: choose one of {', '.join(ARCHS)}")
    return REGISTRY[config.arch](config)


def load_sae(folder: Path) -> SparseAutoencoder:
    """The SAE saved in folder by ``SparseAutoencoder.save`` (config.json + sae.safetensors)."""
    config_path, weights_path = folder / "config.json", folder / "sae.safetensors"
    if not config_path.exists() or not weights_path.exists():
        raise FileNotFoundError(f"{folder} holds no saved SAE (config.json and sae.safetensors)")
    meta = json.loads(config_path.read_text())
    sae = build_sae(SAEConfig(**meta["config"]))
    try:
        tensors = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{weights_path} is unreadable or corrupt: {exc}") from exc
    missing = sorted(set(sae.params()) - set(tensors))
    if missing:
        raise ValueError(f"{weights_path} lacks tensors {', '.join(missing)}")
    sae.load_tensors(tensors)
    return sae


__all__ = ["ARCHS", "REGISTRY", "SAEConfig", "SparseAutoencoder", "StepStats", "build_sae", "load_sae"]
