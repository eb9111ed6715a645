"""Builders of small inputs the engine tests share: SAE configs, known dictionaries, toy streams."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import torch

from training.saes import SAEConfig


def load_script(name: str) -> ModuleType:
    """A script of ``scripts/`` (not a package) loaded as a module, for tests of its functions."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sae_config(arch: str, d_in: int = 16, dict_size: int = 32, **overrides) -> SAEConfig:
    """A small SAE config of ``arch`` with the sparsity setting that architecture needs."""
    sparsity = {"k": 4} if arch in ("topk", "batchtopk") else {"l1": 0.05}
    return SAEConfig(arch=arch, d_in=d_in, dict_size=dict_size, **{**sparsity, **overrides})


def orthonormal_rows(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """n orthonormal rows in d dimensions (n <= d)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return q[:, :n].T.contiguous().float()


def unit_gaussian_rows(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """n random unit rows in d dimensions, Gaussian then normalised (like the toy features)."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randn(n, d, generator=gen)
    return rows / rows.norm(dim=1, keepdim=True)


class RecordingSource:
    """A batch source that wraps another and records every step it is asked for, in order."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.steps: list[int] = []

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        self.steps.append(step)
        return self.inner.batch(step, batch_size)
