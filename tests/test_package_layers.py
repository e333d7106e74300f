"""The package's import graph: data flows one way (DESIGN.md, README "What is where").

Each module sits in a layer; a module imports only modules of its own layer or below, the graph
has no circle, and the two rooms of the second layer (data, models) do not import each other.
Imports inside functions count too: a lazy import that goes up is still a dependency upward.
Imports under ``if TYPE_CHECKING:`` (for annotations) do not: they never run.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "van_edu"

LAYERS = [
    # 0: foundations, below everything
    {"van_edu", "van_edu.errors", "van_edu.runtime", "van_edu.fileio", "van_edu.conv_arithmetic", "van_edu.stats",
     "van_edu.metrics"},
    # 1: the data room and the models room (LKA included), side by side
    {"van_edu.augment", "van_edu.images", "van_edu.sources", "van_edu.cache", "van_edu.hub", "van_edu.garments",
     "van_edu.data", "van_edu.lka_fast", "van_edu.lka", "van_edu.models"},
    # 2: training
    {"van_edu.distributed", "van_edu.evaluation", "van_edu.recipes", "van_edu.train_state", "van_edu.train"},
    # 3: measuring, explaining and drawing
    {"van_edu.complexity", "van_edu.scaling", "van_edu.explain", "van_edu.viz", "van_edu.diagrams", "van_edu.bench",
     "van_edu.report", "van_edu.roofline"},
    # 4: the jobs, the notebooks' helpers and the grader
    {"van_edu.compare", "van_edu.notebook", "van_edu.explorers", "van_edu.grading"},
    # 5: the command line
    {"van_edu.cli", "van_edu.__main__"},
]
DATA_ROOM = {"van_edu.augment", "van_edu.images", "van_edu.sources", "van_edu.cache", "van_edu.hub", "van_edu.garments",
             "van_edu.data"}
MODELS_ROOM = {"van_edu.lka_fast", "van_edu.lka", "van_edu.models"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The van_edu modules ``path`` imports (relative imports resolved; ``from . import x`` gives x)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names
                         if (PACKAGE.parent / target.replace(".", "/") / f"{a.name}.py").exists()
                         or (PACKAGE.parent / target.replace(".", "/") / a.name).is_dir())
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {t for t in found if t.split(".")[0] == "van_edu" and t != name}


def _runtime_nodes(tree: ast.AST):
    """Every node, except those under ``if TYPE_CHECKING:`` (imports for annotations only: they
    never run, so they make no dependency at run time)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def layer_of(name: str) -> int:
    """The layer of a module; a submodule (van_edu.models.van) is in its room's layer. A module of
    the package that no layer names is an error (the bare package's layer is not a default)."""
    for depth in range(name.count(".") + 1, 1 if "." in name else 0, -1):
        prefix = ".".join(name.split(".")[:depth])
        for i, layer in enumerate(LAYERS):
            if prefix in layer:
                return i
    raise AssertionError(f"{name} is in no layer: add it to LAYERS in {__file__}")


def room(name: str) -> str | None:
    top = ".".join(name.split(".")[:2])
    return "data" if top in DATA_ROOM else "models" if top in MODELS_ROOM else None


GRAPH = {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def test_no_module_imports_one_above_it():
    upward = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
              for m, targets in GRAPH.items() for t in targets if layer_of(t) > layer_of(m)]
    assert not upward, upward


def test_the_data_and_models_rooms_do_not_import_each_other():
    crossing = [(m, t) for m, targets in GRAPH.items() for t in targets
                if {room(m), room(t)} == {"data", "models"}]
    assert not crossing, crossing


def test_the_import_graph_has_no_circle():
    state: dict[str, str] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for t in sorted(GRAPH.get(m, ())):
            if t.startswith(m + "."):
                continue                       # a package importing its own submodules
            assert state.get(t) != "open", " -> ".join(path + [t])
            if t not in state:
                visit(t, path + [t])
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])


def test_the_checks_can_fail():
    """The graph reader sees a lazy import inside a function, and an upward one is caught."""
    assert "van_edu.models" in GRAPH["van_edu.bench"]                 # imported inside a function
    assert layer_of("van_edu.models.van") == 1 and layer_of("van_edu.grading.agent") == 4
    assert layer_of("van_edu.cli") > layer_of("van_edu.models.van")
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("van_edu.a_new_module")
