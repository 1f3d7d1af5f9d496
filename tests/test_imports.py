"""No import cycles among videogn's modules: module-level imports (also under ``if TYPE_CHECKING:``,
which type checkers follow) are read with ``ast`` and every cycle is listed.

An edge is what a module's own import statements name: ``import videogn.a.b`` and
``from videogn.a import b`` (b a module) are edges to ``videogn.a.b``; ``from videogn.a import X``
(X not a module) is an edge to ``videogn.a`` (its ``__init__``). The parent packages Python imports
on the way are not counted: a package's ``__init__`` is always imported before its submodules, so
those edges close no loop that an import order could trip on, while counting them would put every
``__init__`` that re-exports its submodules in a "cycle". Imports inside functions are left out:
they are how a cycle is broken on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "videogn"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """(statement, under TYPE_CHECKING) for every import run when the module is imported: module
    level, also inside if/try/with blocks and class bodies, never inside functions."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(body: list[ast.stmt], typing_only: bool) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append((node, typing_only))
            elif isinstance(node, ast.If):
                visit(node.body, typing_only or _is_type_checking(node.test))
                visit(node.orelse, typing_only)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                    visit(block, typing_only)
            elif isinstance(node, (ast.With, ast.ClassDef)):
                visit(node.body, typing_only)

    visit(tree.body, False)
    return found


def import_graph() -> dict[str, dict[str, bool]]:
    """module -> {imported videogn module: True when only under TYPE_CHECKING}."""
    modules = _modules()
    graph: dict[str, dict[str, bool]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        edges: dict[str, bool] = {}

        def add(target: str, typing_only: bool) -> None:
            if target in modules and target != name:
                edges[target] = edges.get(target, True) and typing_only

        for node, typing_only in _module_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name, typing_only)
                continue
            base = node.module or ""
            if node.level:  # relative: from the package this module is in (or is)
                package = name.split(".")
                package = package if is_package else package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in modules else base, typing_only)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, dict[str, bool]]) -> list[list[str]]:
    """Every elementary cycle, each listed once, starting at its smallest module name."""
    cycles: list[list[str]] = []
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, {})):
                if nxt == start:
                    cycles.append(path)
                elif nxt > start and nxt not in path:
                    stack.append((nxt, [*path, nxt]))
    return cycles


def _describe(cycle: list[str], graph: dict[str, dict[str, bool]]) -> str:
    hops = []
    for a, b in zip(cycle, [*cycle[1:], cycle[0]]):
        hops.append(f"{a} -> {b}" + (" (TYPE_CHECKING)" if graph[a][b] else ""))
    return "; ".join(hops)


def test_the_scan_reads_imports_as_python_does():
    graph = import_graph()
    assert "videogn.layers.group_norm3d" in graph["videogn.layers"]       # from videogn.layers.x import ...
    assert "videogn.functional" in graph["videogn.layers.group_norm3d"]   # from videogn.functional import ...
    assert "videogn.registry" in graph["videogn.layers.norms"]
    tree = ast.parse(
        "import videogn.a\nif TYPE_CHECKING:\n    from videogn import b\ntry:\n    import c\nexcept ImportError:\n"
        "    import d\ndef f():\n    import e\nclass K:\n    import g\n"
    )
    names = [(n.names[0].name, typing_only) for n, typing_only in _module_level_imports(tree)]
    assert names == [("videogn.a", False), ("b", True), ("c", False), ("d", False), ("g", False)]
    assert find_cycles({"a": {"b": False}, "b": {"a": True, "c": False}, "c": {"b": False}}) == [["a", "b"], ["b", "c"]]


def test_no_import_cycles():
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, f"{len(cycles)} import cycle(s) in videogn/:\n" + "\n".join(
        "  " + _describe(c, graph) for c in cycles
    )
