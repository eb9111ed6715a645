"""How do the dictionary-learning package's SAE trainers compare with ours on the same rows and held-out rows?

Two halves, each run in its own virtualenv (``make peer-venv`` builds the package's, ``.peer-venv``):

``train`` (``.peer-venv/bin/python``) reads a run's activations through our own code, exactly the batches our
sweep trainer sees (batch ``step`` is ``ScaledSource.batch(step, batch_size)`` for step 0 .. rows // batch_size
- 1), and trains the package's ``TopKTrainer`` (k = 8 by default) or ``StandardTrainerAprilUpdate`` (one SAE
per ``--l1``) by calling its ``update(step, x)`` in a plain loop, every SAE on the same batches. Their own
defaults set the learning rate (TopK: 2e-4 / sqrt(n / 2^14); April: 1e-3); their warm-ups (lr 1000 steps,
sparsity 2000, TopK threshold tracking from 1000) are capped at a tenth of the run so short runs fit, and the
learning rate decays linearly over the last 20% of steps (the package's demo's decay start, 0.8). Each SAE is
saved in our orientation (``W_enc``, ``W_dec`` n x d) with a ``peer.json`` of its trainer, arguments and speed.

``compare`` (``.venv/bin/python``) folds each saved SAE into our classes exactly, checks the fold on the
held-out rows, and measures it beside our SAE of the same name on the held-out rows our pipeline uses:

    make peer-venv
    .peer-venv/bin/python scripts/peer_reference.py train --run runs/study --arch topk --sizes 2048 \\
        --out runs/study/peer
    .peer-venv/bin/python scripts/peer_reference.py train --run runs/study --arch april --sizes 2048 \\
        --l1 0.1 0.3 1 --out runs/study/peer
    .venv/bin/python scripts/peer_reference.py compare --run runs/study --peer runs/study/peer \\
        --ours runs/study/saes/saes --ours-l1 0.3 --out docs/results/peer_reference.json

The folds: the package's TopK encodes topk(relu(W_enc (x - b_dec) + b_enc)), ours relu(topk(pre)); both keep
the same k values (where fewer than k are positive the rest are zeros either way), so the weights load as
they are. The April SAE's atoms d_i are not unit norm and its penalty is l1 * sum_i c_i ||d_i||; scaling
encoder row i and bias i by ||d_i|| and atom i by 1 / ||d_i|| gives unit atoms, codes c_i ||d_i|| and the
same reconstruction, and then its objective (squared error summed over dimensions, averaged over rows, so
factor 1) is our relu objective ||x - x_hat||^2 + l1 * sum_i c_i with the same l1.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import math
import re
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the peer virtualenv runs this file without our package installed
    sys.path.insert(0, str(REPO))

from training.activations.harvest import ActivationSource  # noqa: E402
from training.analysis.doubling import heldout_min_firings, heldout_snapshot  # noqa: E402
from training.analysis.metrics import evaluate  # noqa: E402
from training.experiments.pipeline import ScaledSource  # noqa: E402
from training.experiments.record import check_record_header, write_check_record  # noqa: E402
from training.features.evidence import DEFAULT_MIN_CONTRIBUTION, DEFAULT_MIN_FIRINGS  # noqa: E402
from training.saes import SAEConfig, SparseAutoencoder, build_sae, load_sae  # noqa: E402
from training.saes.base import PARAM_NAMES  # noqa: E402
from training.sweeps.convergence import heldout_point  # noqa: E402

PACKAGE = "dictionary-learning"
PEER_FILE = "peer.json"
WEIGHTS_FILE = "sae.safetensors"
FOLD_TOLERANCE = 1e-5
L0_MATCH = 0.2  # |peer L0 / our L0 - 1| at most this counts as matched
DEFAULT_EVAL_ROWS = 20_000  # the study preset's held-out rows
DEFAULT_BATCH_SIZE = 512  # the study preset's rows per SAE step
WARMUP_CAP = 0.1  # no warm-up longer than this fraction of the run
DECAY_START_FRACTION = 0.8  # the package's demo config: linear decay over the last 20% of steps
MIN_STEPS = 20
MSE_TERM = "both objectives sum the squared error over dimensions and average it over rows: factor 1 between them"
L0_MATCHING = (
    "TopK: both use the same k (8 unless --k says otherwise), so L0 is k on both sides. April trainer: its L1 "
    "penalty does not fix L0, so `train --l1` takes a list and `compare --ours-l1` pairs every April SAE of a "
    f"size with our relu SAE of that size and l1; `matched` marks pairs whose L0 ratio is within {L0_MATCH:.0%} "
    "of 1 and `closest` the best pair of each of our SAEs"
)
RARE_BASIS = (
    "the doubling test's held-out evidence (training.analysis.doubling.heldout_snapshot): a latent is rare when "
    "it fires on the held-out rows but on fewer than heldout_min_firings of them, or its largest contribution "
    f"(max code x atom norm) is below {DEFAULT_MIN_CONTRIBUTION:.0%} of the rows' RMS norm; dead when it never "
    "fires on them"
)
KINDS = {
    "topk": {"trainer": "TopKTrainer", "module": "dictionary_learning.trainers.top_k", "arch": "topk"},
    "april": {
        "trainer": "StandardTrainerAprilUpdate",
        "module": "dictionary_learning.trainers.standard",
        "arch": "relu",
    },
}


# --- the package's SAEs as formulas, and their folds into ours ------------------------------------------------
def peer_codes(kind: str, tensors: dict[str, torch.Tensor], x: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """The codes the package's SAE gives x, from its weights in our orientation (its default forward)."""
    post = torch.relu((x - tensors["b_dec"]) @ tensors["W_enc"].T + tensors["b_enc"])
    if kind == "april":
        return post
    if k is None:
        raise ValueError("a TopK SAE's codes need its k")
    top = post.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(post).scatter_(-1, top.indices, top.values)


def peer_reconstruct(kind: str, tensors: dict[str, torch.Tensor], x: torch.Tensor, k: int | None = None):
    """The package's reconstruction of x: its codes times its (possibly non-unit) atoms plus the decoder bias."""
    return peer_codes(kind, tensors, x, k) @ tensors["W_dec"] + tensors["b_dec"]


def peer_objective(tensors: dict[str, torch.Tensor], x: torch.Tensor, l1: float) -> float:
    """The April trainer's loss on x at full sparsity weight: sum_d err^2 + l1 * sum_i c_i ||d_i||, row mean."""
    codes = peer_codes("april", tensors, x)
    err = (x - (codes @ tensors["W_dec"] + tensors["b_dec"])).pow(2).sum(dim=1)
    penalty = (codes * tensors["W_dec"].norm(dim=1)).sum(dim=1)
    return float((err + l1 * penalty).double().mean())


def fold_topk(tensors: dict[str, torch.Tensor], k: int) -> SparseAutoencoder:
    """Our topk SAE with the package's TopK weights: its unit-norm atoms and encoder load unchanged."""
    n, d = tensors["W_enc"].shape
    sae = build_sae(SAEConfig(arch="topk", d_in=d, dict_size=n, k=k))
    sae.load_tensors({name: tensors[name] for name in PARAM_NAMES})
    return sae


def fold_april(tensors: dict[str, torch.Tensor], l1: float) -> SparseAutoencoder:
    """Our relu SAE equal to an April-trainer SAE: atom norms moved into the encoder rows and biases.

    The package's SAE is our relu with penalised atoms (``decoder_norm="penalised"``), whose unit-atom form
    (``unit_atom_params``) has codes c_i ||d_i||: the penalty l1 * sum_i c_i ||d_i|| is our l1 * sum_i c'_i.
    """
    n, d = tensors["W_enc"].shape
    penalised = build_sae(SAEConfig(arch="relu", d_in=d, dict_size=n, l1=l1, decoder_norm="penalised"))
    penalised.load_tensors({name: tensors[name] for name in ("W_enc", "b_enc", "W_dec", "b_dec")})
    sae = build_sae(SAEConfig(arch="relu", d_in=d, dict_size=n, l1=l1))
    sae.load_tensors(penalised.unit_atom_params())
    return sae


def fold(meta: dict, tensors: dict[str, torch.Tensor]) -> SparseAutoencoder:
    """Our SAE equal to the package's SAE saved with ``meta`` (its peer.json)."""
    if meta["kind"] == "topk":
        return fold_topk(tensors, meta["trainer_args"]["k"])
    return fold_april(tensors, meta["trainer_args"]["l1_penalty"])


@torch.no_grad()
def fold_check(meta: dict, tensors: dict[str, torch.Tensor], sae: SparseAutoencoder, x: torch.Tensor) -> dict:
    """The largest differences between the package's formulas and the folded SAE on rows x; raises past 1e-5."""
    kind, k = meta["kind"], meta["trainer_args"].get("k")
    norms = tensors["W_dec"].norm(dim=1)
    recon, codes = 0.0, 0.0
    for start in range(0, x.shape[0], 4096):
        part = x[start : start + 4096]
        theirs = peer_codes(kind, tensors, part, k)
        expected = theirs if kind == "topk" else theirs * norms
        codes = max(codes, float((sae.encode(part) - expected).abs().max()))
        recon = max(recon, float((sae.reconstruct(part) - peer_reconstruct(kind, tensors, part, k)).abs().max()))
    check = {"rows": int(x.shape[0]), "max_abs_code_difference": codes, "max_abs_reconstruction_difference": recon}
    if kind == "april":
        theirs, ours = peer_objective(tensors, x, meta["trainer_args"]["l1_penalty"]), heldout_point(sae, x)
        check["objective"] = {"peer": theirs, "folded": ours["objective"]}
        # Sums in float32: the objective is held to 1e-5 absolute, or of its size where it exceeds 1.
        check["objective_difference"] = abs(theirs - ours["objective"]) / max(1.0, abs(theirs))
    worst = max(v for key, v in check.items() if key.startswith("max_abs") or key == "objective_difference")
    if worst > FOLD_TOLERANCE:
        raise ValueError(
            f"the fold of {meta['name']} is off by {worst:.3g} (over {FOLD_TOLERANCE:g}): the package's forward "
            f"no longer matches peer_codes ({meta['package']} {meta['version']}); re-read its encode/decode"
        )
    return check


# --- train: the package's trainers on our rows ----------------------------------------------------------------
def peer_schedule(steps: int) -> dict[str, int]:
    """Warm-ups and decay start for a run of ``steps``: the trainers' defaults capped to fit, decay at 80%."""
    if steps < MIN_STEPS:
        raise ValueError(f"{steps} steps is too short for the package's schedules: train at least {MIN_STEPS} steps")
    cap = int(steps * WARMUP_CAP)
    return {
        "warmup_steps": min(1000, cap),
        "sparsity_warmup_steps": min(2000, cap),
        "threshold_start_step": min(1000, cap),
        "decay_start": int(steps * DECAY_START_FRACTION),
    }


def trainer_args(kind: str, size: int, d: int, steps: int, layer: int, lm_name: str, k: int, l1: float | None):
    """The constructor arguments of one trainer: its defaults but for size, schedule, k or L1 and the CPU."""
    schedule = peer_schedule(steps)
    common = {
        "steps": steps,
        "activation_dim": d,
        "dict_size": size,
        "layer": layer,
        "lm_name": lm_name,
        "warmup_steps": schedule["warmup_steps"],
        "decay_start": schedule["decay_start"],
        "seed": 0,
        "device": "cpu",
    }
    if kind == "topk":
        return {**common, "k": k, "lr": None, "threshold_start_step": schedule["threshold_start_step"]}
    return {**common, "l1_penalty": l1, "sparsity_warmup_steps": schedule["sparsity_warmup_steps"]}


def peer_tensors(kind: str, ae: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The package's SAE weights in our orientation (rows are latents), plus the TopK inference threshold."""
    tensors = {
        "W_enc": ae.encoder.weight,
        "b_enc": ae.encoder.bias,
        "W_dec": ae.decoder.weight.T,
        "b_dec": ae.b_dec if kind == "topk" else ae.bias,
    }
    if kind == "topk":
        tensors["threshold"] = ae.threshold.reshape(1)
    return {name: t.detach().cpu().float().contiguous() for name, t in tensors.items()}


def our_name(kind: str, size: int, k: int, l1: float | None) -> str:
    """The name our sweep gives the SAE of this arch, size and sparsity (topk_n2048_k8, relu_n2048_l10.3)."""
    if kind == "topk":
        return SAEConfig(arch="topk", d_in=1, dict_size=size, k=k).name
    return SAEConfig(arch="relu", d_in=1, dict_size=size, l1=l1).name


def sweep_train(run: Path) -> dict:
    """Our sweep's training settings for the run (samples, batch size), or {} without a sweep."""
    path = run / "saes" / "sweep.json"
    return json.loads(path.read_text())["train"] if path.exists() else {}


def train(args: argparse.Namespace) -> None:
    try:
        import dictionary_learning
    except ImportError as exc:
        raise SystemExit(
            f"{exc}: the train half runs in the package's virtualenv: make peer-venv, then "
            ".peer-venv/bin/python scripts/peer_reference.py train ..."
        ) from exc
    torch.set_num_threads(args.threads)
    source = ScaledSource(ActivationSource(args.run / "activations"))
    ours = sweep_train(args.run)
    batch_size = args.batch_size or ours.get("batch_size") or DEFAULT_BATCH_SIZE
    steps = args.steps or (args.rows or ours.get("samples", 0)) // batch_size
    if steps <= 0:
        raise SystemExit(f"{args.run}/saes/sweep.json is missing: pass --rows or --steps")
    manifest = source.source.manifest
    layer = manifest.layer if manifest.layer is not None else int((re.findall(r"\d+", manifest.module) or [0])[0])
    lm_name = f"{manifest.model} {manifest.weights_hash}"
    spec = KINDS[args.arch]
    trainer_class = getattr(importlib.import_module(spec["module"]), spec["trainer"])
    l1s = args.l1 if args.arch == "april" else [None]
    if args.arch == "april" and not l1s:
        raise SystemExit("the April trainer needs its sparsity penalty: pass --l1 (one or more values)")
    jobs = []
    for size in args.sizes:
        for l1 in l1s:
            kwargs = trainer_args(args.arch, size, source.dim, steps, layer, lm_name, args.k, l1)
            jobs.append({"name": our_name(args.arch, size, args.k, l1), "kwargs": kwargs, "seconds": 0.0})
            jobs[-1]["trainer"] = trainer_class(**kwargs)
    started = time.perf_counter()
    last_loss: dict[str, float | None] = {}
    for step in range(steps):
        x = source.batch(step, batch_size)
        for job in jobs:
            tic = time.perf_counter()
            loss = job["trainer"].update(step, x)
            job["seconds"] += time.perf_counter() - tic
            last_loss[job["name"]] = loss
        if args.progress and (step + 1) % max(steps // 20, 1) == 0:
            print(f"step {step + 1}/{steps} ({time.perf_counter() - started:.0f}s)", flush=True)
    pass_seconds = time.perf_counter() - started
    rows = steps * batch_size
    check_rows = source.batch(0, min(batch_size, 4096))
    summary = []
    for job in jobs:
        trainer, name = job["trainer"], job["name"]
        tensors = peer_tensors(args.arch, trainer.ae)
        with torch.no_grad():
            module_out = trainer.ae(check_rows)
        formula = peer_reconstruct(args.arch, tensors, check_rows, args.k if args.arch == "topk" else None)
        forward_difference = float((module_out - formula).abs().max())
        if forward_difference > FOLD_TOLERANCE:
            raise SystemExit(
                f"{name}: the package's forward differs from peer_reconstruct by {forward_difference:.3g}: "
                f"{PACKAGE} {dictionary_learning.__version__} changed its encode; update peer_codes"
            )
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(folder / WEIGHTS_FILE))
        meta = {
            "name": name,
            "kind": args.arch,
            "our_arch": spec["arch"],
            "package": PACKAGE,
            "version": dictionary_learning.__version__,
            "trainer_class": spec["trainer"],
            "trainer_args": {**job["kwargs"], "k": args.k} if args.arch == "topk" else job["kwargs"],
            "trainer_config": {
                key: v for key, v in trainer.config.items() if isinstance(v, (int, float, str, type(None)))
            },
            "schedule_rule": (
                f"the trainer's warm-ups (lr 1000, sparsity 2000, threshold 1000 steps) capped at "
                f"{WARMUP_CAP:.0%} of the steps; linear decay from {DECAY_START_FRACTION:.0%} of the steps"
            ),
            "mse_term": MSE_TERM,
            "run": str(args.run),
            "source": source.spec(),
            "rows": rows,
            "batch_size": batch_size,
            "steps": steps,
            "batches": "ScaledSource.batch(step, batch_size) for step in 0 .. steps - 1, as our sweep trainer reads",
            "seconds": round(job["seconds"], 3),
            "rows_per_s": round(rows / max(job["seconds"], 1e-9), 1),
            "pass_seconds": round(pass_seconds, 3),
            "threads": args.threads,
            "last_batch_loss": last_loss[name],
            "forward_check": {"rows": int(check_rows.shape[0]), "max_abs_difference": forward_difference},
        }
        (folder / PEER_FILE).write_text(json.dumps(meta, indent=2))
        summary.append(f"{name}: {rows:,} rows in {job['seconds']:.1f}s ({meta['rows_per_s']:,.0f} rows/s)")
    print("\n".join(summary))


# --- compare: folded into ours, beside ours, on the held-out rows ---------------------------------------------
def heldout_numbers(sae: SparseAutoencoder, held_out: torch.Tensor, firings: int) -> dict:
    """L0, FVU, dead and rare latents and the training objective of one SAE on the held-out rows."""
    snapshot = heldout_snapshot(sae, held_out, firings, DEFAULT_MIN_CONTRIBUTION)
    point = heldout_point(sae, held_out)
    return {
        "l0": snapshot.l0,
        "fvu": snapshot.fvu,
        "dead": snapshot.dead,
        "rare": snapshot.rare,
        "objective": point["objective"],
    }


def run_heldout(run: Path, source: ScaledSource, eval_rows: int | None) -> tuple[int, int, str]:
    """Held-out rows, the rare threshold on them and where it comes from: the run's record (metrics.json)
    where it has one for these rows, else the index's 20 firings scaled from the run's activation rows."""
    metrics_path = run / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    rows = eval_rows or (metrics.get("config") or {}).get("eval_rows") or DEFAULT_EVAL_ROWS
    doubling = metrics.get("doubling") or {}
    if doubling.get("heldout_min_firings") is not None and doubling.get("heldout_rows") == rows:
        return rows, int(doubling["heldout_min_firings"]), f"the run's record ({metrics_path}: doubling)"
    index_rows = source.source.manifest.shape[0]
    firings = heldout_min_firings(DEFAULT_MIN_FIRINGS, rows, index_rows)
    return rows, firings, f"{DEFAULT_MIN_FIRINGS} firings scaled from the run's {index_rows:,} activation rows"


def compare(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    source = ScaledSource(ActivationSource(args.run / "activations"))
    eval_rows, firings, firings_basis = run_heldout(args.run, source, args.eval_rows)
    held_out = source.batch(-1_000_000, eval_rows)
    folders = sorted(p.parent for p in args.peer.glob(f"*/{PEER_FILE}"))
    if not folders:
        raise SystemExit(f"{args.peer} holds no peer SAEs ({PEER_FILE}): run the train half first")
    sweep_path = args.ours.parent / "sweep.json" if args.ours else None
    ours_rows = json.loads(sweep_path.read_text())["train"]["samples"] if sweep_path and sweep_path.exists() else None
    pairs, peer_rows = [], set()
    for folder in folders:
        meta = json.loads((folder / PEER_FILE).read_text())
        tensors = load_file(str(folder / WEIGHTS_FILE))
        sae = fold(meta, tensors)
        check = fold_check(meta, tensors, sae, held_out)
        peer_rows.add(meta["rows"])
        peer = heldout_numbers(sae, held_out, firings)
        for ours_l1 in (args.ours_l1 or [sae.config.l1]) if meta["kind"] == "april" else [sae.config.l1]:
            pair = _pair(args.ours, meta, sae, peer, ours_l1, held_out, firings)
            pairs.append({**pair, "fold_check": check})
    _mark_closest(pairs)
    verdicts = _verdicts(pairs)
    record = {
        **check_record_header(
            __file__,
            __doc__.splitlines()[0],
            "python scripts/peer_reference.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            threads=args.threads,
        ),
        "run": str(args.run),
        "rows": {"ours": ours_rows, "peer": sorted(peer_rows)},
        "held_out_rows": eval_rows,
        "held_out": "ScaledSource.batch(-1_000_000, held_out_rows): the rows our pipeline evaluates on",
        "heldout_min_firings": firings,
        "heldout_min_firings_basis": firings_basis,
        "rare_basis": RARE_BASIS,
        "objective": "held-out squared error per row plus the SAE's own sparsity penalty (heldout_point)",
        "mse_term": MSE_TERM,
        "l0_matching": L0_MATCHING,
        "fold_tolerance": FOLD_TOLERANCE,
        "pairs": pairs,
        "verdicts": verdicts,
        "verdict_basis": VERDICT_BASIS,
    }
    write_check_record(args.out, record)
    for pair in pairs:
        ours, peer = pair["ours"] or {"l0": float("nan"), "fvu": float("nan")}, pair["peer"]
        print(
            f"{pair['peer_name']:>20} vs {pair['ours_name'] or '-':>20}: L0 {peer['l0']:.2f} / {ours['l0']:.2f}, "
            f"FVU {peer['fvu']:.4f} / {ours['fvu']:.4f}, matched {pair['matched']}"
        )
    for verdict in verdicts:
        print(f"{verdict['ours_name']}: {verdict['verdict']}")
    print(f"wrote {args.out}")


def _pair(
    ours_dir: Path | None,
    meta: dict,
    sae: SparseAutoencoder,
    peer: dict,
    ours_l1: float,
    held_out: torch.Tensor,
    firings: int,
) -> dict:
    """One peer SAE beside our SAE of its size (and of ``ours_l1`` for the April trainer)."""
    size = sae.config.dict_size
    name = our_name(meta["kind"], size, sae.config.k or 0, ours_l1)
    ours_sae = load_sae(ours_dir / name) if ours_dir and (ours_dir / name).exists() else None
    ours = heldout_numbers(ours_sae, held_out, firings) if ours_sae is not None else None
    ratio = peer["l0"] / ours["l0"] if ours and ours["l0"] > 0 else None
    pair = {
        "size": size,
        "arch": sae.config.arch,
        "sparsity": {"k": sae.config.k} if meta["kind"] == "topk" else {"ours_l1": ours_l1, "peer_l1": sae.config.l1},
        "ours_name": name if ours is not None else None,
        "peer_name": meta["name"],
        "peer_trainer": f"{meta['package']} {meta['version']} {meta['trainer_class']}",
        "ours_rows": json.loads((ours_dir / name / "config.json").read_text()).get("samples") if ours else None,
        "peer_rows": meta["rows"],
        "peer_rows_per_s": meta["rows_per_s"],
        "ours": ours,
        "peer": dict(peer),
        "l0_ratio": ratio,
        "matched": ratio is not None and abs(ratio - 1) <= L0_MATCH,
    }
    if meta["kind"] == "april" and ours is not None and ours_l1 != sae.config.l1:
        # Objectives under different l1 do not compare; this one weighs the peer's codes as ours are weighed.
        pair["peer"]["objective_at_ours_l1"] = evaluate(sae, held_out).mse + ours_l1 * _mean_code_sum(sae, held_out)
    return pair


VERDICT_BASIS = (
    "for each of our SAEs, the matched pair (L0 within the tolerance) whose L0 ratio is nearest 1: ours passes "
    "when its dead count and its FVU are each no larger than the peer's; with no matched pair there is no verdict"
)


def _verdicts(pairs: list[dict]) -> list[dict]:
    """The issue's test per SAE of ours: at matched L0, dead and FVU no worse than the peer's."""
    out = []
    for name in sorted({p["ours_name"] for p in pairs if p["ours_name"]}):
        mine = [p for p in pairs if p["ours_name"] == name]
        matched = [p for p in mine if p["matched"]]
        if not matched:
            nearest = min(mine, key=lambda p: abs(p["l0_ratio"] - 1) if p["l0_ratio"] else float("inf"))
            out.append({"ours_name": name, "verdict": "no matched pair", "nearest_l0_ratio": nearest["l0_ratio"]})
            continue
        best = min(matched, key=lambda p: abs(p["l0_ratio"] - 1))
        dead_ok = best["ours"]["dead"] <= best["peer"]["dead"]
        fvu_ok = best["ours"]["fvu"] <= best["peer"]["fvu"]
        out.append(
            {
                "ours_name": name,
                "peer_name": best["peer_name"],
                "l0_ratio": best["l0_ratio"],
                "dead": {"ours": best["ours"]["dead"], "peer": best["peer"]["dead"], "no_worse": dead_ok},
                "fvu": {"ours": best["ours"]["fvu"], "peer": best["peer"]["fvu"], "no_worse": fvu_ok},
                "verdict": "no worse" if dead_ok and fvu_ok else "worse",
            }
        )
    return out


def _mean_code_sum(sae: SparseAutoencoder, x: torch.Tensor) -> float:
    """The mean over rows of the sum of the codes: the relu penalty per unit l1."""
    return float(sum(sae.encode(x[s : s + 4096]).sum().double() for s in range(0, x.shape[0], 4096)) / x.shape[0])


def _mark_closest(pairs: list[dict]) -> None:
    """Mark, for each of our SAEs, the peer SAE whose L0 ratio is nearest 1 (``closest``)."""
    best: dict[str, dict] = {}
    for pair in pairs:
        pair["closest"] = False
        if pair["l0_ratio"] is None:
            continue
        held = best.get(pair["ours_name"])
        if held is None or abs(pair["l0_ratio"] - 1) < abs(held["l0_ratio"] - 1):
            best[pair["ours_name"]] = pair
    for pair in best.values():
        pair["closest"] = True


# --- frontier: FVU against L0 over several sparsities, ours beside the peer's -------------------------------
FRONTIER_BASIS = (
    "each of our relu SAEs against the peer's April frontier at the same rows and L0: the peer's FVU at our L0 "
    "is interpolated linearly in log L0 and log FVU between the two peer SAEs of that size and rows whose L0 "
    "bracket ours (none outside the peer's range); `fvu_ratio` = our FVU / that FVU, below 1 where ours "
    "reconstructs better"
)


def interpolate_fvu(points: list[tuple[float, float]], l0: float) -> float | None:
    """FVU at ``l0`` on the frontier through ``points`` (L0, FVU), linear in log-log; None outside their L0 range.

    A single pair's verdict depends on which peer SAE happens to lie within 20% of our L0; interpolating
    between the two that bracket ours compares at the same L0."""
    ordered = sorted(p for p in points if p[0] > 0 and p[1] > 0)
    for (l0_a, fvu_a), (l0_b, fvu_b) in itertools.pairwise(ordered):
        if l0_a <= l0 <= l0_b:
            if l0_b == l0_a:
                return min(fvu_a, fvu_b)
            t = (math.log(l0) - math.log(l0_a)) / (math.log(l0_b) - math.log(l0_a))
            return math.exp(math.log(fvu_a) + t * (math.log(fvu_b) - math.log(fvu_a)))
    if ordered and l0 == ordered[0][0]:
        return ordered[0][1]
    return None


def frontier(args: argparse.Namespace) -> None:
    """Every relu SAE of ours and every April SAE of the sizes, measured on the held-out rows, each of ours
    beside the peer's FVU at its L0: a comparison at equal L0 that no single pair gives."""
    torch.set_num_threads(args.threads)
    source = ScaledSource(ActivationSource(args.run / "activations"))
    eval_rows, firings, firings_basis = run_heldout(args.run, source, args.eval_rows)
    held_out = source.batch(-1_000_000, eval_rows)
    points: list[dict] = []
    for folder in sorted(p.parent for peer_dir in args.peer for p in peer_dir.glob(f"*/{PEER_FILE}")):
        meta = json.loads((folder / PEER_FILE).read_text())
        if meta["kind"] != "april" or meta["trainer_args"]["dict_size"] not in args.sizes:
            continue
        tensors = load_file(str(folder / WEIGHTS_FILE))
        sae = fold(meta, tensors)
        fold_check(meta, tensors, sae, held_out)
        lr = meta["trainer_config"].get("lr")
        points.append(_frontier_point("peer", "/".join(folder.parts[-2:]), meta["rows"], lr, sae, held_out, firings))
    for ours_dir in args.ours:
        for config_path in sorted(ours_dir.glob("*/config.json")):
            saved = json.loads(config_path.read_text())
            config = saved.get("config", {})
            if config.get("arch") != "relu" or config.get("dict_size") not in args.sizes:
                continue
            sae = load_sae(config_path.parent)
            name = "/".join([*ours_dir.parts[-3:-1], config_path.parent.name])
            points.append(_frontier_point("ours", name, saved.get("samples"), config["lr"], sae, held_out, firings))
    if not any(p["trainer"] == "peer" for p in points) or not any(p["trainer"] == "ours" for p in points):
        raise SystemExit("frontier needs April SAEs in --peer and relu SAEs in --ours of the same --sizes")
    for point in points:
        if point["trainer"] != "ours":
            continue
        peer = [
            (q["l0"], q["fvu"])
            for q in points
            if q["trainer"] == "peer" and q["size"] == point["size"] and q["rows"] == point["rows"]
        ]
        at_l0 = interpolate_fvu(peer, point["l0"])
        point["peer_fvu_at_l0"] = at_l0
        point["fvu_ratio"] = point["fvu"] / at_l0 if at_l0 else None
    record = {
        **check_record_header(
            __file__,
            "At the same L0, does our relu trainer reconstruct better or worse than the April trainer?",
            "python scripts/peer_reference.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            threads=args.threads,
        ),
        "run": str(args.run),
        "held_out_rows": eval_rows,
        "heldout_min_firings": firings,
        "heldout_min_firings_basis": firings_basis,
        "rare_basis": RARE_BASIS,
        "basis": FRONTIER_BASIS,
        "points": points,
    }
    write_check_record(args.out, record)
    if args.figure:
        _frontier_figure(points, args.sizes, args.figure)
    for point in sorted(points, key=lambda p: (p["size"], p["trainer"], p["l0"])):
        ratio = f", {point['fvu_ratio']:.3f} x the peer's FVU at this L0" if point.get("fvu_ratio") else ""
        print(
            f"{point['trainer']:>4} {point['name']:>40}: L0 {point['l0']:6.2f}, FVU {point['fvu']:.4f}, "
            f"dead {point['dead']}{ratio}"
        )
    print(f"wrote {args.out}")


def _frontier_point(
    trainer: str, name: str, rows: int | None, lr: float | None, sae, held_out: torch.Tensor, firings: int
) -> dict:
    """One SAE's place on the FVU-L0 plane, with its dead and rare latents."""
    numbers = heldout_numbers(sae, held_out, firings)
    return {
        "trainer": trainer,
        "name": name,
        "size": sae.config.dict_size,
        "l1": sae.config.l1,
        "lr": lr,
        "rows": rows,
        **numbers,
    }


def _frontier_figure(points: list[dict], sizes: list[int], path: Path) -> None:
    """FVU against L0 (log-log), one panel per size, a series per trainer, rows and learning rate (2 digits)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def key(p: dict) -> tuple[str, int, float]:
        return p["trainer"], p["rows"] or 0, float(f"{p['lr']:.2g}") if p["lr"] else 0.0

    series = sorted({key(p) for p in points})
    colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(series)}
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes) + 3, 4.5), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        for trainer, rows, lr in series:
            mine = sorted(
                (p["l0"], p["fvu"], p["l1"]) for p in points if p["size"] == size and key(p) == (trainer, rows, lr)
            )
            if not mine:
                continue
            label = "ours (relu)" if trainer == "ours" else "dictionary-learning April"
            label += f", lr {lr:g}" if lr else ""
            label += f", {rows / 1e6:.0f}M rows" if rows else ""
            style = "o-" if trainer == "ours" else "s--"
            ax.plot([m[0] for m in mine], [m[1] for m in mine], style, color=colours[(trainer, rows, lr)], label=label)
            for l0, fvu, l1 in mine:
                ax.annotate(f"{l1:g}", (l0, fvu), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("L0 (held-out rows)")
        ax.set_ylabel("FVU")
        ax.set_title(f"{size} latents (labels: l1)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1 - 3 / (5 * len(sizes) + 3), 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the package's SAEs on a run's rows (in .peer-venv)")
    t.add_argument("--run", type=Path, required=True, help="a run folder with activations/ (e.g. runs/study)")
    t.add_argument("--arch", choices=list(KINDS), required=True, help="topk: TopKTrainer; april: the April update")
    t.add_argument("--sizes", type=int, nargs="+", required=True, help="dictionary sizes (latents)")
    t.add_argument("--k", type=int, default=8, help="TopK: active latents per row")
    t.add_argument("--l1", type=float, nargs="*", default=[], help="April: one SAE per sparsity penalty")
    t.add_argument("--rows", type=int, help="training rows (default: the run's saes/sweep.json samples)")
    t.add_argument("--steps", type=int, help="training steps instead of --rows (smoke tests)")
    t.add_argument("--batch-size", type=int, help="rows per step (default: the run's sweep, else 512)")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--progress", action="store_true", help="print a line every 5%% of the steps")
    t.add_argument("--out", type=Path, required=True, help="folder for one sub-folder per SAE")
    c = sub.add_parser("compare", help="fold the package's SAEs into ours and measure both (in .venv)")
    c.add_argument("--run", type=Path, required=True, help="the run whose held-out rows to measure on")
    c.add_argument("--peer", type=Path, required=True, help="the train half's --out folder")
    c.add_argument("--ours", type=Path, help="our SAEs of the run (e.g. runs/study/saes/saes)")
    c.add_argument(
        "--ours-l1", type=float, nargs="+", help="April: pair every peer SAE with our relu SAE of each of these l1"
    )
    c.add_argument("--eval-rows", type=int, help="held-out rows (default: the run's config, else 20,000)")
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--out", type=Path, required=True, help="the comparison's JSON record")
    f = sub.add_parser("frontier", help="FVU against L0: our relu SAEs beside the April SAEs (in .venv)")
    f.add_argument("--run", type=Path, required=True, help="the run whose held-out rows to measure on")
    f.add_argument("--peer", type=Path, nargs="+", required=True, help="the train half's --out folders")
    f.add_argument("--ours", type=Path, nargs="+", required=True, help="folders of our SAEs (runs/study/saes/saes)")
    f.add_argument("--sizes", type=int, nargs="+", required=True, help="dictionary sizes to compare")
    f.add_argument("--eval-rows", type=int, help="held-out rows (default: the run's config, else 20,000)")
    f.add_argument("--threads", type=int, default=2)
    f.add_argument("--figure", type=Path, help="a PNG of FVU against L0 per size")
    f.add_argument("--out", type=Path, required=True, help="the frontier's JSON record")
    args = parser.parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], None]] = {
        "train": train,
        "compare": compare,
        "frontier": frontier,
    }
    commands[args.command](args)


if __name__ == "__main__":
    main()
