"""``monosemantic sae export|import``: SAEs out of a run in a field format, and foreign SAEs into a run.

Exports work on the site's raw activations, as a SAELens or sparsify user feeds them; imports attach an
SAE to a run's activations so ``monosemantic index`` builds its feature evidence like our own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

FORMAT_NAMES = ("saelens", "sparsify")


def add_sae(commands: argparse._SubParsersAction) -> None:
    sae = commands.add_parser(
        "sae",
        help="export an SAE in SAELens or sparsify layout, or import one into a run",
        description="Move SAEs between this project and the field's on-disk layouts (SAELens, sparsify).",
    )
    actions = sae.add_subparsers(title="actions", dest="sae_action", metavar="ACTION", required=True)
    export = actions.add_parser(
        "export",
        help="write one of a run's SAEs as a SAELens or sparsify folder that works on raw activations",
        description=(
            "Write SAE NAME of the run in DIR as a folder in the chosen layout. The activation scale the "
            "run trained on is folded into the weights, so the export reads the site's raw activations. "
            "relu and tied export as SAELens standard, topk as topk, jumprelu as jumprelu, batchtopk as "
            "jumprelu with its batch threshold; sparsify holds top-k SAEs only."
        ),
    )
    export.add_argument("--workdir", type=Path, required=True, metavar="DIR", help="the run folder")
    export.add_argument("--sae", required=True, metavar="NAME", help="an SAE of the run, e.g. topk_n1024_k8")
    export.add_argument("--format", choices=FORMAT_NAMES, required=True, help="the layout to write")
    export.add_argument("--out", type=Path, required=True, metavar="PATH", help="folder to write (made if missing)")
    export.set_defaults(command=_export, parser=export)

    imp = actions.add_parser(
        "import",
        help="attach a SAELens or sparsify SAE to a run, so `monosemantic index` indexes it",
        description=(
            "Read the SAE folder PATH, check its input width (and hook, where its metadata names one) "
            "against the run's activations, convert it exactly to this project's form and save it in "
            "DIR/imported/NAME with its FVU, L0 and dead fraction on the run's held-out rows. SAELens options "
            "with an exact equivalent (rescale_acts_by_decoder_norm, apply_b_dec_to_input false) are folded "
            "into the weights and said so; others are refused by name. Then run "
            "`monosemantic index --workdir DIR` to build its features and load it into the app."
        ),
    )
    imp.add_argument("path", type=Path, metavar="PATH", help="the SAE folder")
    imp.add_argument("--format", choices=FORMAT_NAMES, required=True, help="the folder's layout")
    imp.add_argument("--workdir", type=Path, required=True, metavar="DIR", help="the run whose activations it reads")
    imp.add_argument("--name", default=None, help="name in the run (default <format>_<arch>_n<size>)")
    imp.add_argument(
        "--no-hook-check",
        action="store_true",
        help="accept an SAE whose metadata names another hook than the run's activations",
    )
    imp.set_defaults(command=_import, parser=imp)


def _export(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not args.workdir.is_dir():
        parser.error(f"--workdir {args.workdir} is not a folder")
    from training.formats.run_saes import export_run_sae

    raw = export_run_sae(args.workdir, args.sae, args.format, args.out)
    print(f"wrote {args.sae} as {args.format} {raw.arch} ({raw.d_in} -> {raw.d_sae}) to {args.out}")
    return 0


def _import(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not args.workdir.is_dir():
        parser.error(f"--workdir {args.workdir} is not a folder")
    from training.formats.run_saes import import_run_sae, source_record

    folder, metrics = import_run_sae(args.path, args.format, args.workdir, args.name, not args.no_hook_check)
    for conversion in (source_record(folder) or {}).get("conversions", []):
        print(f"folded {conversion} (same codes and reconstructions)")
    print(
        f"imported {folder.name} into {folder}: FVU {metrics['fvu']:.4f}, L0 {metrics['l0']:.2f}, "
        f"dead {metrics['dead_fraction']:.3f} on {metrics['eval_rows']:,} held-out rows"
    )
    print(f"next: monosemantic index --workdir {args.workdir}")
    return 0
