"""Subcommands that run steps of the pipeline on their own: ``harvest``, ``train-lm`` and ``train``.

``monosemantic harvest`` reads any local transformers model and writes a run directory's ``tokens/``
and ``activations/`` (or one shard of them); ``train-lm`` runs the pipeline's tokenizer and LM steps;
``train`` trains, evaluates and indexes the SAE sweep of any run directory. Started by
``torchrun --nproc_per_node N -m app train-lm|train ...`` they run data-parallel over the N processes,
and only the first prints and writes.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from app.cli.arguments import add_device_option, add_recipe_option, chosen_device, comma_list, positive_int
from training.experiments.pipeline import PRESETS


def shard_spec(text: str) -> tuple[int, int]:
    """An argparse type for ``i/n``: shard i (counting from 0) of n."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 0 <= int(match.group(1)) < int(match.group(2)):
        raise argparse.ArgumentTypeError(f"expected i/n with 0 <= i < n, such as 0/4, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def add_harvest(commands: argparse._SubParsersAction) -> None:
    harvest = commands.add_parser(
        "harvest",
        help="tokenize a corpus with a local transformers model's tokenizer and harvest one module's activations",
        description=(
            "Load a transformers model and its tokenizer from a local folder (never from a hub), encode the corpus "
            "into DIR/tokens/ and write the output of --module for every training token into DIR/activations/. "
            "With --shard i/n only shard i of n is harvested, so n workers can share the work; then run "
            "`monosemantic train --workdir DIR`."
        ),
    )
    harvest.add_argument("--model", type=Path, required=True, metavar="PATH", help="folder of a transformers model")
    harvest.add_argument(
        "--module",
        required=True,
        metavar="NAME",
        help="module whose output is harvested, e.g. encoder.layer.2.intermediate",
    )
    harvest.add_argument("--workdir", type=Path, required=True, metavar="DIR", help="run folder")
    harvest.add_argument("--corpus", type=Path, default=None, metavar="PATH", help=".txt, folder of .txt, or .jsonl")
    harvest.add_argument("--max-documents", type=positive_int, default=None, metavar="N", help="first N documents only")
    harvest.add_argument("--context", type=positive_int, default=None, metavar="N", help="tokens per window")
    harvest.add_argument("--name", default=None, help="model name shown in the app (default: the folder's name)")
    harvest.add_argument("--shard", type=shard_spec, default=None, metavar="i/n", help="harvest shard i of n only")
    harvest.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_device_option(harvest)
    harvest.set_defaults(command=_harvest, parser=harvest)


def _harvest(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.corpus is not None and not args.corpus.exists():
        parser.error(f"corpus {args.corpus} does not exist: pass --corpus PATH to a .txt, folder or .jsonl")
    if args.context is not None and args.context < 2:
        parser.error(f"argument --context: expected at least 2 tokens, got {args.context}")
    from training.activations.hf_harvest import HFHarvestConfig, harvest_hf
    from training.activations.store import ShardRecord

    config = HFHarvestConfig(
        model=args.model, module=args.module, name=args.name, context=args.context, max_documents=args.max_documents
    )
    device = chosen_device(args, parser)
    result = harvest_hf(config, args.workdir, args.corpus, args.shard, progress=not args.no_progress, device=device)
    if isinstance(result, ShardRecord):
        print(
            f"shard {result.index}/{result.count}: rows {result.start}-{result.stop} of {result.n_tokens} tokens x "
            f"{result.dim} of {result.module} ({result.model}) in {result.seconds:.1f} s"
        )
        print(f"when every shard is harvested: monosemantic train --workdir {args.workdir}")
        return 0
    print(
        f"{result.shape[0]} tokens x {result.shape[1]} of {result.module} ({result.model}) in {result.seconds:.1f} s "
        f"({result.tokens_per_s:,.0f} tokens/s)"
    )
    print(
        f"activations: {args.workdir / 'activations' / result.file}; next: monosemantic train --workdir {args.workdir}"
    )
    return 0


def add_train(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train, evaluate and index the SAE sweep on a run folder's activations (data-parallel under torchrun)",
        description=(
            "Train the preset's SAE sweep (relu over an l1 grid and topk, at every dictionary size) on DIR's "
            "harvested activations (one file or a sharded store), write DIR/metrics.json and index every SAE's "
            "features into DIR/features/ for `monosemantic index`. Resumable. Started as "
            "`torchrun --nproc_per_node N -m app train ...` it trains data-parallel over N processes."
        ),
    )
    train.add_argument("--workdir", type=Path, required=True, metavar="DIR", help="run folder")
    train.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="(default %(default)s)")
    train.add_argument(
        "--dict-sizes", type=comma_list(positive_int), default=None, metavar="a,b,..", help="(default: the preset's)"
    )
    train.add_argument("--samples", type=positive_int, default=None, help="rows per SAE (default: the preset's)")
    train.add_argument("--batch-size", type=positive_int, default=None, help="rows per step (default: the preset's)")
    train.add_argument(
        "--init-samples", type=positive_int, default=None, help="rows for data-dependent initialisation (default 16384)"
    )
    train.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_recipe_option(train)
    add_device_option(train)
    train.set_defaults(command=_train, parser=train)


def _train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not args.workdir.is_dir():
        parser.error(
            f"workdir {args.workdir} does not exist: run `monosemantic harvest --workdir {args.workdir}` first"
        )
    from training.experiments.distributed import init_replica, launched_by_torchrun
    from training.experiments.sweep_run import sweep_settings, train_run

    settings = sweep_settings(
        args.preset, args.dict_sizes, args.samples, args.batch_size, args.init_samples, args.recipe
    )
    if not launched_by_torchrun():
        metrics = train_run(args.workdir, settings, progress=not args.no_progress, device=chosen_device(args, parser))
    else:
        import torch.distributed as dist

        replica = init_replica("gloo")  # SAEs train on the CPU in every process
        try:
            metrics = train_run(args.workdir, settings, replica, progress=not args.no_progress)
        finally:
            dist.destroy_process_group()
        if metrics is None:
            return 0
    print(f"{'name':<28} {'l0':>8} {'fvu':>7} {'dead':>6}")
    for run in metrics["runs"]:
        print(f"{run['name']:<28} {run['l0']:8.2f} {run['fvu']:7.4f} {run['dead_fraction']:6.3f}")
    estimate = metrics["feature_count_estimate"]
    bound = ", still rising at the largest sizes: a lower bound" if estimate.get("peak_at_largest_pair") else ""
    print(f"feature count estimate {estimate['value']} ({estimate['low']}-{estimate['high']}{bound})")
    print(f"metrics: {args.workdir / 'metrics.json'}; features: {args.workdir / 'features'}")
    return 0


def add_train_lm(commands: argparse._SubParsersAction) -> None:
    train_lm = commands.add_parser(
        "train-lm",
        help="the pipeline's tokenizer and tiny-LM steps alone (data-parallel under torchrun)",
        description=(
            "Tokenize the corpus and train the tiny LM into DIR/tokens/ and DIR/lm/ exactly as `monosemantic run` "
            "does, which then reuses both. Started as `torchrun --nproc_per_node N -m app train-lm ...` the LM "
            "trains with DistributedDataParallel over N processes (one GPU each when CUDA is there)."
        ),
    )
    train_lm.add_argument("--preset", choices=sorted(PRESETS), default="default", help="(default %(default)s)")
    train_lm.add_argument(
        "--workdir", type=Path, default=None, metavar="DIR", help="run folder (default runs/<preset>)"
    )
    train_lm.add_argument("--corpus", type=Path, default=None, metavar="PATH", help=".txt, folder of .txt, or .jsonl")
    train_lm.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="LM steps (default: the preset's; another value is not reused by run)",
    )
    train_lm.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_device_option(train_lm)
    train_lm.set_defaults(command=_train_lm, parser=train_lm)


def _train_lm(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.corpus is not None and not args.corpus.exists():
        parser.error(f"corpus {args.corpus} does not exist: pass --corpus PATH to a .txt, folder or .jsonl")
    from training.experiments.distributed import init_replica, launched_by_torchrun, train_pipeline_lm

    config = PRESETS[args.preset]
    if args.steps is not None:
        config = config.model_copy(update={"lm_steps": args.steps})
    workdir = args.workdir or Path("runs") / args.preset
    progress = not args.no_progress
    if not launched_by_torchrun():
        trained = train_pipeline_lm(config, workdir, args.corpus, progress=progress, device=chosen_device(args, parser))
    else:
        import torch.distributed as dist

        replica = init_replica()
        try:
            trained = train_pipeline_lm(config, workdir, args.corpus, replica, progress)
        finally:
            dist.destroy_process_group()
        if not replica.is_writer:
            return 0
    lm = trained.metrics
    print(
        f"LM validation loss {lm.val_loss:.3f} nats/token: unigram {lm.unigram_loss:.3f}, bigram {lm.bigram_loss:.3f} "
        f"({lm.tokens_per_s:,.0f} tokens/s)"
    )
    print(f"model: {workdir / 'lm'}; next: monosemantic run --preset {args.preset} --workdir {workdir}")
    return 0
