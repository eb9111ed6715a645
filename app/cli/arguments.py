"""Argument types of the ``monosemantic`` command line: each parses one flag's text or fails in one line."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors are a single line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>`` on one line and exit with code 2."""
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def positive_int(text: str) -> int:
    """An integer > 0; accepts 2000000, 2_000_000 and 2e6."""
    try:
        value = int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
        if not number.is_integer():
            raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
        value = int(number)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _finite_float(text: str, allow_zero: bool) -> float:
    """A finite float above zero (or at least zero when ``allow_zero``)."""
    wanted = "a number >= 0" if allow_zero else "a positive number"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite float > 0."""
    return _finite_float(text, allow_zero=False)


def non_negative_float(text: str) -> float:
    """A finite float >= 0."""
    return _finite_float(text, allow_zero=True)


def comma_list(item: Callable[[str], int | float]) -> Callable[[str], list]:
    """An argparse type for ``a,b,c``: each item parsed by ``item``, repeats dropped, sorted."""

    def parse(text: str) -> list:
        parts = [part.strip() for part in text.split(",")]
        if not text.strip() or any(not part for part in parts):
            raise argparse.ArgumentTypeError(f"expected a comma-separated list such as 1,2,3, got {text!r}")
        return sorted(set(map(item, parts)))

    return parse


def add_recipe_option(parser: argparse.ArgumentParser) -> None:
    """``--recipe NAME``: how the SAEs are trained (training.saes.recipes), so an older record can be rebuilt."""
    from training.experiments.pipeline import PipelineConfig
    from training.saes.recipes import RECIPES

    default = PipelineConfig.model_fields["recipe"].default
    parser.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default=None,
        help=f"how the SAEs are trained, as docs/experiment.md describes each recipe (default {default})",
    )


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda`` (auto: CUDA when the machine has it)."""
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where to compute: auto (CUDA when there is one, else the CPU), cpu or cuda (default auto)",
    )


def chosen_device(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """The torch device ``--device`` names; a one-line error (exit 2) when it names CUDA on a machine without."""
    from training.runtime.device import DeviceError, resolve_device

    try:
        return resolve_device(args.device)
    except DeviceError as exc:
        parser.error(f"argument --device: {exc}")
