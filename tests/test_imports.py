"""The floors of the package: no import cycle among magvit modules, and imports at module level.

Read from the source with ``ast`` (nothing is imported). An edge ``a -> b`` is an import of ``b`` that runs
when ``a`` is imported: at module level, outside ``if TYPE_CHECKING:``. A function-level ``from magvit ...``
import is allowed only where start-up cost needs it (the torch-free command line and lazy attributes).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "magvit"

#: Modules whose function-level magvit imports keep a light import light: the command line (``magvit
#: --help`` loads no torch), the lazy attributes of ``magvit`` and ``magvit.train``, and the registry
#: (torch-free for the command line; it checks plugin tasks and samplers with the torch protocols).
LAZY = {"magvit", "magvit.cli", "magvit.train", "magvit.registry"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _target(name: str) -> str | None:
    """The magvit module an import of ``name`` runs (``magvit.data.reader.X`` -> ``magvit.data.reader``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: resolved against this module's package
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join(package + ([base] if base else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    return [t for t in (_target(n) for n in names if n.startswith("magvit")) if t is not None and t != module]


def _imports(module: str) -> tuple[set[str], list[tuple[int, str]]]:
    """``(module-level targets, [(line, target)] of function-level imports)`` of ``module``."""
    path = MODULES[module]
    top: set[str] = set()
    nested: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # annotations only: never runs
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                targets = _imported(child, module, path.name == "__init__.py")
                if in_function:
                    nested.extend((child.lineno, t) for t in targets)
                else:
                    top.update(targets)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return top, nested


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One import path per cycle (``a -> b -> ... -> a``), found by depth-first search."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []
    cycles: list[list[str]] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    return cycles


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_magvit_modules():
    graph = {module: _imports(module)[0] for module in MODULES}
    # the floors: checkpoint files below the pipeline, the token cache above the objective and the pipeline
    assert "magvit.checkpoint" in graph["magvit.pipeline"] and "magvit.checkpoint" in graph["magvit.train.trainer"]
    assert {"magvit.objective", "magvit.pipeline", "magvit.train.token_cache"} <= graph["magvit.train.tokenize"]
    assert not any(m.startswith("magvit.train") for m in graph["magvit.pipeline"] | graph["magvit.data"])
    assert _cycles(graph) == [], "import cycles: " + "; ".join(" -> ".join(c) for c in _cycles(graph))


def test_no_cycle_through_function_level_imports_either():
    """A deferred import hides a cycle rather than removing it (e.g. a demo that calls the command line that
    runs the demo): none either when the function-level imports count."""
    graph = {}
    for module in MODULES:
        top, nested = _imports(module)
        graph[module] = top | {target for _, target in nested}
    assert _cycles(graph) == [], "import cycles: " + "; ".join(" -> ".join(c) for c in _cycles(graph))


def test_magvit_imports_are_at_module_level_except_where_start_up_cost_needs_them():
    nested = {module: _imports(module)[1] for module in MODULES}
    misplaced = [f"{module}:{line} imports {target}" for module, found in sorted(nested.items())
                 if module not in LAZY for line, target in found]
    assert misplaced == [], "move these imports to the top of their module: " + "; ".join(misplaced)
