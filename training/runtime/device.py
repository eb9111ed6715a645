"""The compute device a command runs on: ``auto`` (CUDA when there is one), ``cpu`` or ``cuda``.

Resolved once per command and handed to each stage, which records the device it actually used, so
``metrics.json`` says where every number was computed. On CUDA, float32 matrix products may use TF32
(about 1e-3 relative error per product, well inside the tolerances the tests hold CPU results to).
"""

from __future__ import annotations

import copy
from typing import TypeVar

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


class DeviceError(ValueError):
    """A device choice this machine cannot honour."""


def resolve_device(choice: str = "auto") -> torch.device:
    """The device for ``choice``; DeviceError when it names CUDA on a machine without a CUDA device."""
    if choice not in DEVICE_CHOICES:
        raise DeviceError(f"unknown device {choice!r}: choose one of {', '.join(DEVICE_CHOICES)}")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError("no CUDA device is available on this machine: use --device cpu (or auto)")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return torch.device("cuda")


def device_name(device: torch.device) -> str:
    """The device as metrics.json records it: ``cpu``, or ``cuda`` with the GPU's name."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return "cpu"


STAGES = ("lm", "harvest", "sae_sweep", "evaluation", "feature_index")


def devices_record(
    device: torch.device | str, computed_on_device: tuple[str, ...], stages: tuple[str, ...] = STAGES
) -> dict:
    """``device`` and ``stage_devices`` for metrics.json: where each stage of a run actually computed.

    Stages not in ``computed_on_device`` ran on the CPU whatever was asked.
    """
    name = device_name(torch.device(device))
    return {"device": name, "stage_devices": {s: name if s in computed_on_device else "cpu" for s in stages}}


Placeable = TypeVar("Placeable")


def _tensors(obj: object):
    if isinstance(obj, torch.nn.Module):
        return obj.parameters()
    return (value for value in vars(obj).values() if isinstance(value, torch.Tensor))


def moved_copy(obj: Placeable, device: torch.device | str) -> Placeable:
    """``obj`` itself when its tensors already sit on ``device``, else a deep copy moved there.

    For a model or SAE (anything with ``.to``) that a stage computes with on the chosen device while the
    original stays where the caller keeps it; on the CPU nothing is copied.
    """
    device = torch.device(device)
    first = next(iter(_tensors(obj)), None)
    if first is None or first.device.type == device.type:
        return obj
    return copy.deepcopy(obj).to(device)
