"""The ``monosemantic`` command line: each subcommand drives one step of the ``training`` library.

Bad arguments exit with code 2 and runtime failures with code 1, each after one line on stderr of the
form ``monosemantic <command>: error: <message>``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError

from app.cli.arguments import (
    CommandParser,
    add_device_option,
    add_recipe_option,
    chosen_device,
    comma_list,
    non_negative_float,
    positive_float,
    positive_int,
)
from app.cli.contrast import add_contrast
from app.cli.record import add_record
from app.cli.sae import add_sae
from training.analysis.mlp_usage import usage_summary
from training.data.corpus import CorpusError
from training.data.toy import ToyConfig
from training.experiments.pipeline import PRESETS, run_pipeline
from training.experiments.toy_experiment import (
    DEFAULT_K,
    DEFAULT_L1,
    INIT_SCHEMES,
    TOPK_ARCHS,
    ToyExperimentConfig,
    default_dict_sizes,
    run_toy_experiment,
)
from training.saes import ARCHS


def init_schemes(text: str) -> list[str]:
    """An argparse type for ``random,data,..``: decoder init schemes in the order given, repeats dropped."""
    parts = [part.strip() for part in text.split(",")]
    unknown = [part for part in parts if part not in INIT_SCHEMES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown init scheme {unknown[0]!r}: choose from {','.join(INIT_SCHEMES)}")
    return list(dict.fromkeys(parts))


def _add_toy(commands: argparse._SubParsersAction) -> None:
    defaults = ToyConfig()
    toy = commands.add_parser(
        "toy",
        help="train a sweep of SAEs on toy data with known features and write metrics.json and figures",
        description=(
            "Train SAEs of several dictionary sizes and sparsities on toy data with G known features, in one "
            "pass, and write DIR/metrics.json (MMCS vs ground truth, L0, FVU, dead fraction, MMCS with larger "
            "dictionaries, feature-count estimate) and DIR/figures/*.png. Re-running the same command resumes."
        ),
    )
    data = toy.add_argument_group("toy data")
    data.add_argument("--dim", type=positive_int, default=defaults.dim, help="dimension d (default %(default)s)")
    data.add_argument(
        "--features", type=positive_int, default=defaults.n_features, help="number G of features (default %(default)s)"
    )
    data.add_argument(
        "--mean-active",
        type=positive_float,
        default=defaults.mean_active,
        help="mean active features per sample (default %(default)s)",
    )
    data.add_argument(
        "--decay",
        type=positive_float,
        default=defaults.decay,
        help="feature i has probability proportional to decay**i, 0 < decay <= 1 (default %(default)s)",
    )
    data.add_argument(
        "--correlated",
        action=argparse.BooleanOptionalAction,
        default=defaults.correlated,
        help="correlate feature co-activation (default: on)",
    )
    sweep = toy.add_argument_group("sweep")
    sweep.add_argument(
        "--samples", type=positive_int, default=2_000_000, help="training samples per SAE (default %(default)s)"
    )
    sweep.add_argument("--batch-size", type=positive_int, default=256, help="samples per step (default %(default)s)")
    sweep.add_argument(
        "--dict-sizes",
        type=comma_list(positive_int),
        default=None,
        metavar="a,b,..",
        help="dictionary sizes (default: 0.5, 1, 2 and 4 times G)",
    )
    sweep.add_argument("--arch", choices=ARCHS, default="relu", help="SAE architecture (default %(default)s)")
    sweep.add_argument(
        "--l1",
        type=comma_list(non_negative_float),
        default=None,
        metavar="x,y,..",
        help=f"sparsity coefficients for relu, tied, jumprelu (default {','.join(f'{v:g}' for v in DEFAULT_L1)})",
    )
    sweep.add_argument(
        "--k",
        type=positive_int,
        default=None,
        help=f"active latents per sample for topk, batchtopk (default {DEFAULT_K})",
    )
    sweep.add_argument("--seed", type=int, default=0, help="seed of the data and of the SAEs (default %(default)s)")
    sweep.add_argument(
        "--eval-samples", type=positive_int, default=20_000, help="held-out evaluation samples (default %(default)s)"
    )
    sweep.add_argument(
        "--init",
        type=init_schemes,
        default=None,
        metavar="a,b,..",
        help=f"decoder initialisation schemes ({','.join(INIT_SCHEMES)}): one SAE per scheme on the same batches, "
        "compared in metrics.json init_comparison (default: the arch's own scheme)",
    )
    sweep.add_argument(
        "--track-recovery",
        type=positive_int,
        default=None,
        metavar="N",
        help="every N steps record each true feature's best cosine with every SAE; writes DIR/recovery.json",
    )
    toy.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    toy.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_device_option(toy)
    toy.set_defaults(command=_toy, parser=toy)


def _toy_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ToyExperimentConfig:
    """The experiment config the arguments ask for, or a one-line usage error."""
    if args.decay > 1:
        parser.error(f"argument --decay: expected 0 < decay <= 1, got {args.decay:g}")
    if args.mean_active > args.features:
        parser.error(f"--mean-active {args.mean_active:g} exceeds --features {args.features}: lower it or add features")
    topk = args.arch in TOPK_ARCHS
    if topk and args.l1 is not None:
        parser.error(f"--l1 does not apply to --arch {args.arch}: it takes --k K")
    if not topk and args.k is not None:
        parser.error(f"--k does not apply to --arch {args.arch}: it takes --l1 x,y,..")
    sizes = args.dict_sizes or default_dict_sizes(args.features)
    k = (args.k or DEFAULT_K) if topk else None
    if k is not None and k > min(sizes):
        parser.error(
            f"--k {k} exceeds the smallest dictionary size {min(sizes)}: pass a smaller --k or larger --dict-sizes"
        )
    try:
        return ToyExperimentConfig(
            toy=ToyConfig(
                dim=args.dim,
                n_features=args.features,
                mean_active=args.mean_active,
                decay=args.decay,
                correlated=args.correlated,
                seed=args.seed,
            ),
            dict_sizes=sizes,
            arch=args.arch,
            l1=None if topk else (args.l1 or list(DEFAULT_L1)),
            k=k,
            samples=args.samples,
            batch_size=args.batch_size,
            seed=args.seed,
            eval_samples=args.eval_samples,
            inits=args.init,
            track_recovery=args.track_recovery,
        )
    except ValidationError as exc:
        parser.error("; ".join(str(err["msg"]).removeprefix("Value error, ") for err in exc.errors()))


def _toy(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = _toy_config(args, parser)
    metrics = run_toy_experiment(config, args.out, progress=not args.no_progress, device=chosen_device(args, parser))
    key = config.sparsity_key
    print(f"{'name':<28} {'mmcs':>6} {'l0':>8} {'fvu':>7} {'dead':>6}")
    for run in metrics["runs"]:
        print(f"{run['name']:<28} {run['mmcs']:6.3f} {run['l0']:8.2f} {run['fvu']:7.4f} {run['dead_fraction']:6.3f}")
    estimate = metrics["feature_count_estimate"]
    if estimate["value"] is not None:
        print(
            f"feature count estimate {estimate['value']} ({estimate['low']}-{estimate['high']}, "
            f"at {estimate.get('sparsity', key)}); true G = {metrics['true_feature_count']}"
        )
    if config.inits:
        _print_init_comparison(metrics["init_comparison"])
    if metrics["recovery"] is not None:
        _print_recovery(metrics["recovery"], args.out)
    print(f"metrics: {args.out / 'metrics.json'}")
    return 0


def _print_init_comparison(rows: list[dict]) -> None:
    """MMCS at initialisation and samples each SAE needed to reach each MMCS threshold ("-": never)."""
    thresholds = list(rows[0]["samples_to_mmcs"]) if rows else []
    print(f"{'name':<32} {'start':>7} " + " ".join(f"{'to ' + t:>9}" for t in thresholds))
    for row in rows:
        cells = " ".join(f"{'-' if n is None else n:>9}" for n in row["samples_to_mmcs"].values())
        print(f"{row['name']:<32} {row['initial_mmcs']:7.3f} {cells}")


def _print_recovery(recovery: dict, out: Path) -> None:
    """Per SAE: features recovered and the rank correlation of probability with recovery time."""
    for sae in recovery["saes"]:
        rho = "n/a" if sae["spearman"] is None else f"{sae['spearman']:+.3f}"
        print(
            f"{sae['name']:<32} recovered {sae['recovered']}, never {sae['never_recovered']}, "
            f"Spearman(probability, samples to cosine {recovery['threshold']:g}) {rho}"
        )
    print(f"recovery: {out / recovery['file']}")


def _add_run(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run",
        help="the whole LM pipeline (corpus, tokenizer, tiny LM, activations, SAE sweep, metrics), resumable",
        description="Build the tiny-LM experiment step by step into --workdir; finished steps are reused.",
    )
    run.add_argument("--preset", choices=sorted(PRESETS), default="default", help="(default %(default)s)")
    run.add_argument("--workdir", type=Path, default=None, metavar="DIR", help="run folder (default runs/<preset>)")
    run.add_argument("--corpus", type=Path, default=None, metavar="PATH", help=".txt, folder of .txt, or .jsonl")
    run.add_argument("--no-serve", action="store_true", help="stop after the pipeline and the database load")
    run.add_argument("--port", type=port_number, default=8000, help="port of the app (default %(default)s)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_recipe_option(run)
    add_device_option(run)
    run.set_defaults(command=_run, parser=run)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.corpus is not None and not args.corpus.exists():
        parser.error(f"corpus {args.corpus} does not exist: pass --corpus PATH to a .txt, folder or .jsonl")
    from app.settings import Settings

    workdir = args.workdir or Path("runs") / args.preset
    device = chosen_device(args, parser)
    config = PRESETS[args.preset]
    if args.recipe is not None:
        config = config.model_copy(update={"recipe": args.recipe})
    metrics = run_pipeline(config, workdir, args.corpus, progress=not args.no_progress, device=device)
    print(f"computed on {metrics['device']} (per stage: {metrics['stage_devices']})")
    lm = metrics["lm"]
    print(
        f"LM validation loss {lm['val_loss']:.3f} nats/token: unigram {lm['unigram_loss']:.3f}, "
        f"bigram {lm['bigram_loss']:.3f}"
    )
    for usage in lm.get("mlp_usage", []):
        if usage["layer"] == metrics["layer"]:
            print(usage_summary(usage))
    window = metrics["convergence"]["window"]
    header = f"{'name':<28} {'l0':>8} {'fvu':>7} {'dead':>6} {'CE rec.':>8}"
    print(f"{header}  held-out objective fall from {window[0]:.0%} to {window[1]:.0%} of training")
    for run in metrics["runs"]:
        fall = run.get("objective_fall")
        trend = "-" if fall is None else f"{fall:6.1%} {'converged' if run['converged'] else 'still improving'}"
        print(
            f"{run['name']:<28} {run['l0']:8.2f} {run['fvu']:7.4f} {run['dead_fraction']:6.3f} "
            f"{run['ce_recovered']:8.3f}  {trend}"
        )
    estimate = metrics["feature_count_estimate"]
    print(f"feature count estimate {estimate['value']} ({estimate['low']}-{estimate['high']})")
    dead_view = "dead + rare" if estimate.get("from_dead_fraction_counts") else "dead"
    for view in estimate.get("from_dead_fraction", []):
        if view["value"] is not None:
            print(
                f"  {view['sweep']}: {view['value']} alive latents at {view['saturated_at']}, "
                f"where half are {dead_view}"
            )
    criteria = metrics.get("evidence_criteria")
    if criteria:
        print(f"evidence: alive = {criteria['description']}; rare = fired with less; dead = never fired")
        for run in metrics["runs"]:
            if "evidence" in run:
                counts = run["evidence"]
                print(
                    f"  {run['name']:<26} alive {counts['alive']:>5} rare {counts['rare']:>5} dead {counts['dead']:>5}"
                )
    print(f"metrics: {workdir / 'metrics.json'}")
    settings = Settings(workdir=workdir, port=args.port)
    _ingest(workdir, settings.resolved_database_url())
    if args.no_serve:
        return 0
    return _serve_app(settings)


def _add_database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", type=Path, default=None, metavar="DIR", help="run folder (default runs/default)")
    parser.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="SQLAlchemy database URL (default $MONOSEMANTIC_DATABASE_URL, else monosemantic.db in the workdir)",
    )


def _workdir_and_database(args: argparse.Namespace) -> tuple[Path, str]:
    """The run folder and database URL the arguments name, defaults from the app's settings."""
    from app.settings import Settings

    settings = Settings(workdir=args.workdir) if args.workdir is not None else Settings()
    return settings.workdir, args.db or settings.resolved_database_url()


def _shown_url(url: str) -> str:
    """A database URL fit to print: any password masked."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: the error that follows says so
        return url


@contextmanager
def _database_errors(url: str) -> Iterator[None]:
    """Turn a database driver's error into a one-line ValueError naming the database (password hidden)."""
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    try:
        yield
    except ArgumentError as exc:
        raise ValueError(f"--db {url!r} is not a database URL ({exc}): use e.g. sqlite:///path/to.db") from None
    except SQLAlchemyError as exc:
        raise ValueError(f"database {_shown_url(url)}: {getattr(exc, 'orig', None) or exc}") from None
    except ModuleNotFoundError as exc:
        raise ValueError(
            f"database {_shown_url(url)}: its driver {exc.name} is not installed: pip install {exc.name}"
        ) from None


@contextmanager
def _database(url: str, migrate: bool) -> Iterator:
    """An engine on url for one command: the SQLite folder (or, without migrate, file) checked first, the
    schema upgraded when migrate, driver errors as one-line ValueErrors, the engine disposed at the end."""
    from app.db.migrate import upgrade_to_head
    from app.db.session import make_engine

    _require_sqlite_folder(url, must_exist=not migrate)
    with _database_errors(url):
        if migrate:
            upgrade_to_head(url)
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def _require_sqlite_folder(url: str, must_exist: bool) -> None:
    """Refuse a SQLite file in a missing folder (or, with must_exist, a missing file) before SQLite does."""
    from app.db.backup import sqlite_path

    try:
        path = sqlite_path(url)
    except ValueError:
        return
    if must_exist and not path.is_file():
        raise ValueError(f"no database at {path}: run `monosemantic index` first or pass --db URL")
    if not path.parent.is_dir():
        raise ValueError(
            f"folder {path.parent} of the database does not exist: run `monosemantic run` or pass --db URL"
        )


def _add_index(commands: argparse._SubParsersAction) -> None:
    index = commands.add_parser(
        "index",
        help="compute every SAE's feature statistics and load them into the app's database",
        description=(
            "Compute the feature index (top contexts, quantile samples, histograms, top tokens, logit effects) "
            "of every SAE in the workdir, skipping finished ones, migrate the database to the newest schema and "
            "load the features into it. Labels are kept: they name a dictionary's weights hash and a feature index."
        ),
    )
    _add_database_options(index)
    index.add_argument("--force", action="store_true", help="reload dictionaries whose index is unchanged")
    index.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_device_option(index)
    index.set_defaults(command=_index, parser=index)


def _ingest(workdir: Path, url: str, force: bool = False) -> list:
    """Migrate the database at url and load the feature index of workdir into it, a line per dictionary."""
    from app.services.ingest import DictionarySummary, ingest_run

    def report(summary: DictionarySummary) -> None:
        head = (
            f"{summary.name:<28} {summary.dict_size:>6} features {summary.alive:>6} alive {summary.rare:>6} rare "
            f"{summary.dead:>6} dead"
        )
        if summary.unchanged:
            print(f"{head} {summary.examples:>9,} examples  unchanged")
        else:
            print(
                f"{head} {summary.examples:>9,} examples  {summary.seconds:5.1f} s ({summary.rows_per_s:,.0f} rows/s)"
            )

    with _database(url, migrate=True) as engine:
        return ingest_run(engine, workdir, force=force, on_dictionary=report)


def _index(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from training.features import index as feature_index

    device = chosen_device(args, parser)
    workdir, url = _workdir_and_database(args)
    if not workdir.is_dir():
        raise ValueError(
            f"workdir {workdir} does not exist: run `monosemantic run --workdir {workdir}` or pass --workdir"
        )
    from training.experiments.evidence_report import update_run_metrics

    config = feature_index.FeatureIndexConfig()
    feature_index.index_run(workdir, config, progress=not args.no_progress, device=device)
    update_run_metrics(workdir, config)
    summaries = _ingest(workdir, url, args.force)
    print(f"{len(summaries)} dictionaries in {_shown_url(url)}")
    return 0


def _add_labels(commands: argparse._SubParsersAction) -> None:
    labels = commands.add_parser("labels", help="export or import labels (CSV or JSONL)")
    actions = labels.add_subparsers(title="actions", dest="labels_action", metavar="ACTION", required=True)
    export = actions.add_parser(
        "export",
        help="write every label to a file",
        description="Write every label (dictionary hash, index, labeller, verdict, description, confidence, "
        "created_at, top_contexts_monosemantic, seconds_on_screen) to FILE, as CSV or JSONL.",
    )
    export.add_argument("--out", type=Path, required=True, metavar="FILE", help="file to write")
    export.add_argument(
        "--format", choices=("csv", "jsonl"), default=None, help="(default: from the suffix of --out, else csv)"
    )
    _add_database_options(export)
    export.set_defaults(command=_labels_export, parser=export)
    load = actions.add_parser(
        "import",
        help="add the labels of a CSV or JSONL file",
        description="Validate every row of FILE, then add them all in one transaction (or none); rows already "
        "stored exactly are skipped, so importing an export twice adds nothing.",
    )
    load.add_argument("file", type=Path, metavar="FILE", help="CSV or JSONL file as written by `labels export`")
    load.add_argument("--format", choices=("csv", "jsonl"), default=None, help="(default: from the suffix of FILE)")
    _add_database_options(load)
    load.set_defaults(command=_labels_import, parser=load)


def _labels_export(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from app.services.labels_io import export_labels_file, format_of

    _, url = _workdir_and_database(args)
    fmt = args.format or (format_of(args.out) if args.out.suffix.lower() in (".csv", ".jsonl", ".ndjson") else "csv")
    with _database(url, migrate=False) as engine:
        count = export_labels_file(engine, args.out, fmt)
    print(f"exported {count} labels to {args.out} ({fmt})")
    return 0


def _labels_import(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from app.services.labels_io import format_of, import_labels_file

    _, url = _workdir_and_database(args)
    if not args.file.is_file():
        raise ValueError(f"no file {args.file}: pass a CSV or JSONL file written by `monosemantic labels export`")
    fmt = format_of(args.file, args.format)
    with _database(url, migrate=True) as engine:
        result = import_labels_file(engine, args.file, fmt)
    print(f"imported {result.added} labels from {args.file}; {result.skipped} already stored were skipped")
    return 0


def _add_db(commands: argparse._SubParsersAction) -> None:
    db = commands.add_parser("db", help="migrate or back up the app's database")
    actions = db.add_subparsers(title="actions", dest="db_action", metavar="ACTION", required=True)
    upgrade = actions.add_parser(
        "upgrade", help="migrate the database to the newest schema", description="Apply every pending migration."
    )
    _add_database_options(upgrade)
    upgrade.set_defaults(command=_db_upgrade, parser=upgrade)
    backup = actions.add_parser(
        "backup",
        help="copy the SQLite database to a file, consistently, while the app may run",
        description="Copy the SQLite database with SQLite's online backup API and check the copy's integrity. "
        "For PostgreSQL use pg_dump.",
    )
    backup.add_argument("--out", type=Path, required=True, metavar="FILE", help="file to write")
    _add_database_options(backup)
    backup.set_defaults(command=_db_backup, parser=backup)


def _db_upgrade(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from app.db.migrate import upgrade_to_head

    _, url = _workdir_and_database(args)
    _require_sqlite_folder(url, must_exist=False)
    with _database_errors(url):
        revision = upgrade_to_head(url)
    print(f"database {_shown_url(url)} is at revision {revision} (head)")
    return 0


def _db_backup(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from app.db.backup import backup_sqlite

    _, url = _workdir_and_database(args)
    with _database_errors(url):
        result = backup_sqlite(url, args.out)
    counts = ", ".join(f"{table} {n:,}" for table, n in result.rows.items() if table != "alembic_version")
    print(f"backed up {_shown_url(url)} to {result.path} ({result.bytes:,} bytes, integrity ok): {counts}")
    return 0


def port_number(text: str) -> int:
    """A TCP port, 1 to 65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {text!r}")
    return value


def _add_serve(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve the web app: browse features, label them, see the estimates (REST API under /api)",
        description=(
            "Serve the pages and the REST API over the run's database (migrated to the newest schema on start). "
            "Unset options come from MONOSEMANTIC_* environment variables; set MONOSEMANTIC_WRITE_TOKEN to make "
            "API writes need 'Authorization: Bearer <token>'."
        ),
    )
    _add_database_options(serve)
    serve.add_argument(
        "--record",
        type=Path,
        default=None,
        metavar="FOLDER",
        help="label a committed record's dictionaries (FOLDER/labelling/, written by `monosemantic record`) with no "
        "training or activations: unpacked into --workdir (default runs/record-<folder name>) and loaded first",
    )
    serve.add_argument("--host", default=None, help="address to bind (default $MONOSEMANTIC_HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=port_number, default=None, help="port (default $MONOSEMANTIC_PORT, else 8000)")
    add_device_option(serve)
    serve.set_defaults(command=_serve, parser=serve)


def _serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from app.settings import Settings

    device = chosen_device(args, parser)
    workdir = args.workdir
    if args.record is not None:
        workdir = workdir or record_workdir(args.record)
    given = {"workdir": workdir, "database_url": args.db, "host": args.host, "port": args.port}
    given["device"] = device.type
    settings = Settings(**{name: value for name, value in given.items() if value is not None})
    if args.record is not None:
        load_record(args.record, settings)
    elif settings.database_url is None and not Path(settings.workdir).is_dir():
        parser.error(f"workdir {settings.workdir} does not exist: build it with `monosemantic run` or pass --workdir")
    return _serve_app(settings)


def record_workdir(record: Path) -> Path:
    """Where ``serve --record`` unpacks a record's labelling bundle by default: ``runs/record-<folder name>``."""
    return Path("runs") / f"record-{Path(record).resolve().name}"


def load_record(record: Path, settings) -> list:
    """Unpack a record's labelling bundle into the settings' workdir and load it into their database.

    Dictionaries already loaded with the same index are skipped, so a second start takes a second.
    """
    from training.features.bundle import unpack_bundle

    if not Path(record).is_dir():
        raise ValueError(f"record folder {record} does not exist: pass --record docs/results/study or another record")
    folders = unpack_bundle(record, settings.workdir)
    print(f"unpacked {len(folders)} dictionaries of {record} into {settings.workdir}")
    return _ingest(settings.workdir, settings.resolved_database_url())


def _serve_app(settings) -> int:
    """Serve the web app with settings until interrupted; warn when it listens beyond loopback unguarded."""
    import uvicorn

    from app.web.factory import create_app
    from app.web.security import open_server_warning

    url = settings.resolved_database_url()
    _require_sqlite_folder(url, must_exist=False)
    warning = open_server_warning(settings)
    if warning:
        print(warning, file=sys.stderr)
    with _database_errors(url):
        app = create_app(settings)
    print(f"serving {_shown_url(url)} on http://{settings.host}:{settings.port}/ (API reference at /docs)")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
    return 0


def build_parser() -> CommandParser:
    """The ``monosemantic`` parser with every subcommand."""
    parser = CommandParser(prog="monosemantic", description="Sparse autoencoders: how many features are there?")
    commands = parser.add_subparsers(title="commands", dest="command_name", metavar="COMMAND", required=True)
    _add_toy(commands)
    _add_run(commands)
    from app.cli.steps import add_harvest, add_train, add_train_lm  # it imports this module's argument types

    add_harvest(commands)
    add_train_lm(commands)
    add_train(commands)
    _add_index(commands)
    add_sae(commands)
    add_contrast(commands)
    add_record(commands)
    _add_labels(commands)
    _add_db(commands)
    _add_serve(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on argv (default: sys.argv[1:]); the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    command_parser: argparse.ArgumentParser = args.parser
    if extra:
        command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.command(args, command_parser)
    except KeyboardInterrupt:
        print(f"{command_parser.prog}: interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, OSError, CorpusError) as exc:
        print(f"{command_parser.prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
