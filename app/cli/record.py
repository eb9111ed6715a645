"""``monosemantic record``: a run's results as a small record to commit (JSON, figures, README), no weights."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path


def add_record(commands: argparse._SubParsersAction) -> None:
    record = commands.add_parser(
        "record",
        help="write a run's record.json, key figures and README (no weights) into a folder to commit",
        description=(
            "Read DIR/metrics.json and write OUT/record.json (commit, command, machine, stage times, LM losses, "
            "every SAE with its doubling verdict, every estimate with its interval), the key figures, a "
            "README.md stating the numbers and the labelling bundle (OUT/labelling/: the feature index of the "
            "dictionaries the estimates read, for `monosemantic serve --record OUT`). Example: "
            "monosemantic record --workdir runs/study --out docs/results/study "
            "--command 'monosemantic run --preset study --no-serve'."
        ),
    )
    record.add_argument("--workdir", type=Path, required=True, metavar="DIR", help="a finished run")
    record.add_argument("--out", type=Path, required=True, metavar="OUT", help="folder to write")
    record.add_argument(
        "--command",
        dest="run_command",
        default=None,
        help="the command that built the run (default: run --preset P --workdir DIR)",
    )
    record.set_defaults(command=_record, parser=record)


def run_command(metrics: dict, workdir: Path) -> str:
    """The `monosemantic run` invocation that built a run, from its metrics.json: preset, workdir, and the
    recipe where it is not the default (a record of a `--recipe v6` run must say so to be rebuilt)."""
    from training.experiments.pipeline import PipelineConfig

    command = f"monosemantic run --preset {metrics.get('preset', 'default')} --workdir {shlex.quote(str(workdir))}"
    recipe = (metrics.get("config") or {}).get("recipe")
    if recipe is not None and recipe != PipelineConfig.model_fields["recipe"].default:
        command += f" --recipe {recipe}"
    return command


def _record(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not (args.workdir / "metrics.json").is_file():
        parser.error(f"--workdir {args.workdir} has no metrics.json: finish the run first")
    import json

    from training.experiments.record import write_record

    command = args.run_command or run_command(json.loads((args.workdir / "metrics.json").read_text()), args.workdir)
    record = write_record(args.workdir, args.out, command, Path(__file__).resolve().parents[2])
    holding = sum(1 for s in record["saes"] if s["holds"])
    print(f"wrote {args.out}/record.json: {holding} of {len(record['saes'])} SAEs hold; commit {record['commit']}")
    bundle = record["labelling"]
    if bundle is None:
        print(f"no labelling bundle: {args.workdir} has no feature index (run `monosemantic index` first)")
    else:
        names = ", ".join(d["name"] for d in bundle["dictionaries"])
        print(
            f"wrote {args.out}/{bundle['folder']}/: {bundle['bytes'] / 2**20:.1f} MiB, {names}; "
            f"label them with `monosemantic serve --record {args.out}`"
        )
    return 0
