"""The package graph: every import (at module level or inside a function) goes from a higher layer
to a lower one, so data flows one way (submission -> jobs -> per-case results -> leaderboard) and
no cycle can form. The task-type registry names the stages' parts as strings, loaded when used
(``harness.task_types``): that is how a low layer reaches a part of a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "harness"

#: Lowest first. A unit is a sub-package or a top-level module; every ``commands.py`` (and the CLI
#: itself) is the CLI layer, above everything it wires together.
LAYERS: list[set[str]] = [
    {
        "harness",
        "harness.tracks",
        "harness.task_types",
        "harness.runs",
        "harness.config_files",
        "harness.processes",
    },
    {"harness.recipes", "harness.metrics", "harness.results_lock"},
    {"harness.models", "harness.tasks"},
    {"harness.submission"},
    {"harness.finetune"},
    {"harness.jobs", "harness.leaderboard"},
    {"harness.challenge"},
    {"CLI"},
]


def unit_of(module: str) -> str:
    if module.endswith(".commands") or module in ("harness.cli", "harness.__main__"):
        return "CLI"
    return ".".join(module.split(".")[:2])


def layer_of(unit: str) -> int:
    (layer,) = [i for i, units in enumerate(LAYERS) if unit in units] or [None]
    assert layer is not None, f"{unit} has no layer in LAYERS: place it"
    return layer


def imports() -> list[tuple[str, str, str]]:
    """``(importing module, imported module, file:line)`` for every import of a harness module."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found += [(module, n, f"{path}:{node.lineno}") for n in names if n.split(".")[0] == "harness"]
    return found


def test_every_import_goes_down_a_layer():
    upward = []
    for importer, imported, where in imports():
        a, b = unit_of(importer), unit_of(imported)
        if a != b and layer_of(a) <= layer_of(b):
            upward.append(f"{where}: {importer} (layer {layer_of(a)}) imports {imported} (layer {layer_of(b)})")
    assert not upward, "\n".join(upward)


def test_the_graph_is_read_from_the_sources():
    """The check above sees imports inside functions too (it would pass on nothing otherwise)."""
    edges = {(unit_of(a), unit_of(b)) for a, b, _ in imports()}
    assert ("harness.jobs", "harness.finetune") in edges  # module level (jobs.worker)
    assert ("harness.leaderboard", "harness.tasks") in edges  # inside a function (read_runs._mark_stale)
    assert ("CLI", "harness.challenge") in edges


def test_no_module_imports_itself_round_a_circle():
    """Within a layer too: no module reaches itself through the imports of others (module level
    or inside a function), e.g. the toy tasks build on harness.tasks.toy_volumes, not on each other."""
    import graphlib

    modules = {importer for importer, _, _ in imports()}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for importer, imported, _ in imports():
        target = imported if imported in modules else imported.rsplit(".", 1)[0]
        if target in modules and target != importer and not target.endswith("__init__"):
            graph[importer].add(target)
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        raise AssertionError(f"import circle: {' -> '.join(e.args[1])}") from None
