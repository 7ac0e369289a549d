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


#: The phrase a module over the length limit starts its reason with, in its docstring.
LENGTH_LIMIT, LENGTH_REASON = 450, "Over 450 lines for a reason:"


def test_no_module_is_over_450_lines_without_a_reason_in_its_docstring():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        n_lines = len(text.splitlines())
        docstring = " ".join((ast.get_docstring(ast.parse(text)) or "").split())
        if n_lines > LENGTH_LIMIT and LENGTH_REASON not in docstring:
            too_long.append(f"{path.relative_to(PACKAGE.parent)}: {n_lines} lines")
    assert not too_long, f"split these, or say why not in the docstring ('{LENGTH_REASON} ...'):\n" + "\n".join(
        too_long
    )


#: Third-party packages whose import costs a second or more: the reason an import may wait for the
#: function that needs it (the CLI's ``--help`` and the light commands stay quick). numpy too: the
#: metric registry and the task specs stay free of it (tests/test_metric_registry.py).
HEAVY = {
    "numpy",
    "torch",
    "nnunetv2",
    "dynamic_network_architectures",
    "batchgeneratorsv2",
    "SimpleITK",
    "pandas",
    "matplotlib",
    "scipy",
    "sklearn",
    "timm",
    "submitit",
    "nibabel",
}


def _lazy_exports() -> dict[str, str]:
    """``package.name`` -> the module a package's ``__getattr__`` imports it from (``_EXPORTS``)."""
    exports = {}
    for path in sorted(PACKAGE.rglob("__init__.py")):
        package = ".".join(path.relative_to(PACKAGE.parent).parent.parts)
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_EXPORTS" for t in node.targets):
                exports |= {f"{package}.{k}": v for k, v in ast.literal_eval(node.value).items()}
    return exports


def _imported_names(node: ast.Import | ast.ImportFrom, exports: dict[str, str]) -> set[str]:
    """The modules an import statement may load: the module, each name as a submodule, and the
    module a lazily exported name comes from."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if node.level or not node.module:
        return set()
    names = {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return names | {exports[n] for n in names if n in exports}


def _module_level_imports() -> dict[str, set[str]]:
    """Module -> what it imports when it is imported (not what its functions import later)."""
    exports = _lazy_exports()
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names: set[str] = set()
        for node in _outside_functions(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names |= _imported_names(node, exports)
        found[module] = names
    return found


def _outside_functions(tree: ast.AST):
    """The nodes Python runs on import: everything but function bodies and ``if TYPE_CHECKING:``."""
    stack = list(ast.iter_child_nodes(tree))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _heavy_modules() -> set[str]:
    """Harness modules whose import reaches a HEAVY package, through their own module-level imports
    or those of the harness modules (and parent packages) they import."""
    graph = _module_level_imports()

    def harness_parts(name: str) -> set[str]:
        parts = name.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & graph.keys()

    heavy = {m for m, names in graph.items() if any(n.split(".")[0] in HEAVY for n in names)}
    changed = True
    while changed:
        changed = False
        for module, names in graph.items():
            reached = set().union(*(harness_parts(n) for n in names)) | harness_parts(module.rsplit(".", 1)[0])
            if module not in heavy and reached & heavy:
                heavy.add(module)
                changed = True
    return heavy


def test_an_import_waits_inside_a_function_only_for_a_heavy_module():
    """An import inside a function hides a dependency from a reader of the module's top; it is
    worth that only where the module imported costs a second (torch, nnU-Net, pandas, ...)."""
    heavy, exports = _heavy_modules(), _lazy_exports()
    needless = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if not isinstance(inner, (ast.Import, ast.ImportFrom)):
                    continue
                targets = {n for n in _imported_names(inner, exports) if n.split(".")[0] == "harness"}
                if targets and not targets & heavy:
                    needless.append(f"{path.relative_to(PACKAGE.parent)}:{inner.lineno}: {ast.unparse(inner)}")
    assert not needless, "imports of light modules inside functions (move them to the top):\n" + "\n".join(
        sorted(set(needless))
    )
