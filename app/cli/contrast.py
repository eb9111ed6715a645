"""``monosemantic contrast``: which layers and SAE features separate two sets of token positions of a run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from app.cli.arguments import positive_int

MIN_POSITIONS = 4


def add_contrast(commands: argparse._SubParsersAction) -> None:
    contrast = commands.add_parser(
        "contrast",
        help="which layers and SAE features separate two sets of token positions",
        description=(
            "Each set is a regular expression over the run's training text with its target token in [[...]] "
            "(or a named group (?P<target>...)), or literal examples with the target in [[...]]. Prints the "
            "held-out AUC of a logistic probe on every layer's MLP activations and residual stream, and each "
            "dictionary's best features and best pair. Example: --a '\\b(?:Mr|Mrs|Dr)[[\\.]]' "
            "--b '(?<!\\bMr)(?<!\\bMrs)(?<!\\bDr)[[\\.]] [A-Z]'."
        ),
    )
    contrast.add_argument("--workdir", type=Path, required=True, metavar="DIR", help="a run built by `run`")
    for side in ("a", "b"):
        group = contrast.add_mutually_exclusive_group(required=True)
        group.add_argument(f"--{side}", metavar="PATTERN", help=f"set {side}: a regex with the target in [[...]]")
        group.add_argument(
            f"--{side}-example",
            action="append",
            metavar="TEXT",
            help=f"set {side}: a literal example with its target in [[...]] (repeat for more)",
        )
    contrast.add_argument(
        "--max-positions", type=positive_int, default=4000, help="positions kept per set (default %(default)s)"
    )
    contrast.add_argument("--seed", type=int, default=0, help="seed of the sample and the split (default 0)")
    contrast.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the whole result here")
    contrast.add_argument("--no-progress", action="store_true", help="hide progress bars")
    contrast.set_defaults(command=_contrast, parser=contrast)


def _contrast(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not (args.workdir / "lm" / "model.safetensors").exists():
        parser.error(f"--workdir {args.workdir} holds no trained TinyLM (lm/): build it with `monosemantic run`")
    if args.max_positions < MIN_POSITIONS:
        parser.error(f"argument --max-positions: at least {MIN_POSITIONS} (half of each set is held out)")
    if args.seed < 0:
        parser.error(f"argument --seed: expected an integer >= 0, got {args.seed}")
    from training.features.contrast import ContrastConfig, ContrastInputError, contrast, examples_pattern

    try:
        a = args.a or examples_pattern("a", args.a_example)
        b = args.b or examples_pattern("b", args.b_example)
        config = ContrastConfig(max_positions=args.max_positions, seed=args.seed)
        result = contrast(args.workdir, a, b, config, progress=not args.no_progress)
    except ContrastInputError as exc:
        parser.error(f"argument --{exc.field}: {exc.message}")
    print(
        f"positions: {result.positions_a:,} of {result.matched_a:,} matches in a, "
        f"{result.positions_b:,} of {result.matched_b:,} in b "
        f"({result.dropped_overlap:,} matched by both, left out); "
        f"held out {result.heldout_a:,} and {result.heldout_b:,}"
    )
    print("held-out AUC (95% interval) of a probe on each layer, and of its best single unit; layers count from 0")
    for probe in result.probes:
        mark = "  <- the SAEs' layer" if probe.site == "mlp" and probe.layer == result.harvested_layer else ""
        auc, unit = probe.auc, probe.best_unit_auc
        print(
            f"  layer {probe.layer} {probe.site:<5} probe {auc.value:.3f} ({auc.low:.3f}-{auc.high:.3f})  "
            f"unit #{probe.best_unit:<3} {unit.value:.3f} more on {probe.best_unit_more_on}{mark}"
        )
    print(
        "best feature per dictionary (held-out AUC; fires on a / b; best pair; "
        "share of its firings in the corpus that are on its set)"
    )
    for name, features in result.features.items():
        if not features:
            continue
        f, pair = features[0], result.pairs.get(name)
        pair_text = f"#{pair.indices[0]}+#{pair.indices[1]} {pair.auc.value:.3f}" if pair else "-"
        precision = (
            f"{f.corpus_precision:.0%} of {f.corpus_fire_count:,}" if f.corpus_precision is not None else "not measured"
        )
        print(
            f"  {name:<22} #{f.index:<5} {f.auc.value:.3f} more on {f.fires_more_on}  "
            f"{f.fire_rate_a:4.0%} / {f.fire_rate_b:4.0%}  pair {pair_text:<18} {precision}"
        )
    best = max(
        (features[0] for features in result.features.values() if features), key=lambda f: f.auc.value, default=None
    )
    if best is not None:
        print(f"best single feature: {best.dictionary} #{best.index}, held-out AUC {best.auc.value:.3f}")
        for kind, contexts in (("among the sets", best.contexts), ("in the corpus", best.top_contexts)):
            for context in contexts[:2]:
                print(f"  fires most {kind}: {context}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": "contrast", **result.to_json()}, indent=2))
        print(f"wrote {args.json}")
    return 0
