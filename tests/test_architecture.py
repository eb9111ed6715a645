"""The tree shows the architecture: stages and layers import only the ones before them, and nothing circles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The pipeline's stages in the order data flows; a stage may import itself and the stages before it.
TRAINING_STAGES = [
    "runtime",
    "data",
    "lm",
    "activations",
    "saes",
    "analysis",
    "sweeps",
    "features",
    "figures",
    "experiments",
    "formats",
]
# The application's layers, bottom up; ``settings`` sits with ``db`` (it reads the default database URL).
APP_LAYERS = [("db", "settings"), ("services",), ("web",), ("cli",)]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in ("training", "app")
        for path in sorted((REPO / package).rglob("*.py"))
        if path.name != "__main__.py"
    }


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports anywhere in it (``from pkg import module`` resolves to the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: imported_modules(path, known) - {name} for name, path in modules.items()}


def rank(module: str, order: list[tuple[str, ...]], root: str) -> int | None:
    parts = module.split(".")
    if parts[0] != root or len(parts) < 2:
        return None
    return next((i for i, group in enumerate(order) if parts[1] in group), None)


def test_training_never_imports_app(graph):
    offenders = {
        m: sorted(i for i in deps if i.startswith("app")) for m, deps in graph.items() if m.startswith("training")
    }
    assert {m: d for m, d in offenders.items() if d} == {}


def test_every_module_sits_in_a_stage_or_layer(graph):
    stray = [
        m
        for m in graph
        if m not in ("training", "app")
        and rank(m, [(s,) for s in TRAINING_STAGES], "training") is None
        and rank(m, APP_LAYERS, "app") is None
    ]
    assert stray == []


@pytest.mark.parametrize(
    ("root", "order"), [("training", [(s,) for s in TRAINING_STAGES]), ("app", APP_LAYERS)], ids=["training", "app"]
)
def test_imports_run_only_down_the_stages(graph, root, order):
    upward = [
        f"{module} -> {dep}"
        for module, deps in graph.items()
        for dep in deps
        if (mine := rank(module, order, root)) is not None
        and (theirs := rank(dep, order, root)) is not None
        and theirs > mine
    ]
    assert upward == []


def test_no_import_circle(graph):
    visiting, done, cycles = set(), set(), []

    def visit(module: str, trail: list[str]) -> None:
        if module in done:
            return
        if module in visiting:
            cycles.append(trail[trail.index(module) :] + [module])
            return
        visiting.add(module)
        for dep in sorted(graph.get(module, ())):
            if dep.rpartition(".")[0] == module or module.rpartition(".")[0] == dep:
                continue  # a package and its own modules (its __init__ only documents them)
            visit(dep, trail + [module])
        visiting.discard(module)
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert cycles == []
