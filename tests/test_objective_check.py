"""The held-out objective check: a larger dictionary that ends worse than a smaller one is named."""

from __future__ import annotations

from training.analysis.objective_check import objective_by_size
from training.experiments.record import objective_lines


def run(arch: str, size: int, objective: float, **sparsity) -> dict:
    return {"arch": arch, "dict_size": size, "objective": objective, **sparsity}


def test_a_larger_dictionary_worse_than_any_smaller_one_is_named_against_the_best_smaller():
    runs = [
        run("relu", 128, 0.30, l1=0.3),
        run("relu", 256, 0.27, l1=0.3),
        run("relu", 512, 0.28, l1=0.3),  # worse than 256 by 3.7%
        run("relu", 1024, 0.2701, l1=0.3),  # within the 0.5% tolerance of 256
        run("topk", 128, 0.05, k=8),
        run("topk", 256, 0.04, k=8),
    ]
    check = objective_by_size(runs)
    assert not check["holds"]
    relu, topk = check["sweeps"]
    assert relu["l1"] == 0.3 and [w["dict_size"] for w in relu["worse"]] == [512]
    assert relu["worse"][0]["smaller"] == 256
    assert topk["holds"] and topk["objectives"] == {"128": 0.05, "256": 0.04}
    assert "relu 0.3 at 512 (+3.7% on 256)" in objective_lines(check)[0]


def test_sweeps_that_improve_with_size_hold():
    check = objective_by_size([run("relu", n, 1.0 / n, l1=0.1) for n in (128, 256, 512)])
    assert check["holds"] and "does not get worse" in objective_lines(check)[0]
