"""Does a larger dictionary ever end worse on its own held-out objective than a smaller one?

At one sparsity setting a larger dictionary can always do at least as well as a smaller one (it can copy it
and leave the rest silent), so a larger one that ends worse has failed to optimise, and a feature count read
off it would mislead. The check compares each dictionary with the best smaller one of its sweep.
"""

from __future__ import annotations

from collections import defaultdict

OBJECTIVE_TOLERANCE = 0.005  # relative: differences this small are within the held-out rows' noise


def objective_by_size(runs: list[dict], tolerance: float = OBJECTIVE_TOLERANCE) -> dict:
    """Per sweep (arch and sparsity) its held-out objectives by size and every size worse than a smaller one.

    ``runs`` are metrics.json run records with ``arch``, ``dict_size``, ``l1`` or ``k`` and ``objective``.
    """
    sweeps: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        if run.get("objective") is None:
            continue
        key = "k" if run.get("k") is not None and run["arch"] in ("topk", "batchtopk") else "l1"
        sweeps[(run["arch"], key, run[key])].append(run)
    out = []
    for (arch, key, value), members in sorted(sweeps.items(), key=lambda item: (item[0][0], item[0][2])):
        members = sorted(members, key=lambda r: r["dict_size"])
        worse, best = [], None
        for run in members:
            if best is not None and run["objective"] > best["objective"] * (1 + tolerance):
                worse.append(
                    {
                        "dict_size": run["dict_size"],
                        "objective": run["objective"],
                        "smaller": best["dict_size"],
                        "smaller_objective": best["objective"],
                        "worse_by": run["objective"] / best["objective"] - 1,
                    }
                )
            if best is None or run["objective"] < best["objective"]:
                best = run
        out.append(
            {
                "arch": arch,
                key: value,
                "objectives": {str(r["dict_size"]): r["objective"] for r in members},
                "holds": not worse,
                "worse": worse,
            }
        )
    return {"tolerance": tolerance, "holds": all(s["holds"] for s in out), "sweeps": out}
