"""The floor rule of :mod:`svblur.floors`: every module imports, no subpackage imports from
its own floor's other packages or from a higher floor (function-level imports included),
and the modules' import graph has no cycle."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import svblur
from svblur.floors import FLOORS, floor_of

ROOT = Path(svblur.__file__).parent


def _modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """``(imported svblur module, line, at run time)`` for every import in ``path``; a
    ``from package import name`` counts as importing ``package.name`` when that is a
    module. ``at run time`` is false under ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            names = [stem] + [f"{stem}.{alias.name}" for alias in node.names]
            names = [stem] + [n for n in names[1:] if n in MODULES]
        else:
            continue
        runtime = not _in_type_checking(node, parents)
        found += [(name, node.lineno, runtime) for name in names if name.split(".")[0] == "svblur"]
    return found


def _package(module: str) -> str | None:
    """The floor-bearing part of a module name (``svblur.data.bsr`` -> ``data``), or
    ``None`` for the root package (it holds only the version)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_imports():
    for info in pkgutil.walk_packages(svblur.__path__, "svblur."):
        importlib.import_module(info.name)


def test_every_package_is_on_one_floor():
    names = [name for floor in FLOORS for name in floor]
    assert len(names) == len(set(names)), f"a name is on two floors: {names}"
    packages = {_package(module) for module in MODULES} - {None}
    for package in sorted(packages):
        floor_of(package)  # raises, naming the package, when it is on no floor
    assert set(names) - packages == set(), "a floor names a package that does not exist"


def test_no_module_imports_its_floor_or_a_higher_one():
    wrong = []
    for module, path in MODULES.items():
        source = _package(module)
        if source is None:
            continue
        for target, line, _ in _imports(module, path):
            package = _package(target)
            if package is None or package == source:
                continue
            if floor_of(package) >= floor_of(source):
                wrong.append(
                    f"{path.relative_to(ROOT.parent)}:{line}: svblur.{source} (floor "
                    f"{floor_of(source)}) imports {target} (floor {floor_of(package)})"
                )
    assert not wrong, "imports against svblur.floors:\n" + "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_module_import_graph_has_no_cycle():
    """Two modules importing each other, directly or around a loop, is a cycle (imports
    under ``if TYPE_CHECKING`` do not run and do not count). A module importing the
    package that holds it is not counted: Python has already started that package."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        targets = set()
        for target, _, runtime in _imports(module, path):
            # ``from svblur.x import y`` runs svblur.x's __init__ first: an edge to it,
            # except from inside svblur.x (Python has already started that __init__)
            if runtime and target in MODULES and target != module:
                if not module.startswith(target + "."):
                    targets.add(target)
        graph[module] = targets
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)
