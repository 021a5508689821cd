"""The package's modules show its layers: no import cycle, no private name across modules."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "flask_keepsake"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_imports(path: Path, name: str) -> list[tuple[str, str]]:
    """(module, imported name) for every import that runs, at any depth: type-only imports
    (``if TYPE_CHECKING:``) are left out, imports inside functions are kept."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, str]] = []

    def visit(node: ast.AST) -> None:
        test = node.test if isinstance(node, ast.If) else None
        if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
            assert isinstance(node, ast.If)
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("flask_keepsake"):
                found.extend((target, alias.name) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    private: list[str] = []
    for name, path in modules.items():
        edges: set[str] = set()
        for target, imported in _runtime_imports(path, name):
            full = f"{target}.{imported}"
            edges.add(full if full in modules else target)
            if imported.startswith("_"):
                private.append(f"{name} imports {full}")
        graph[name] = edges - {name}
    return graph, private


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in done:
                walk(nxt, [*path, nxt])
        done.add(node)

    for start in sorted(graph):
        walk(start, [start])
    return found


def test_no_import_cycle() -> None:
    graph, _ = _graph()
    assert "flask_keepsake.engine" in graph  # the walk found the package
    assert _cycles(graph) == []


def test_the_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_private_name_imported_across_modules() -> None:
    _, private = _graph()
    assert private == []


#: Underscore names that are public API: namedtuple's methods.
PUBLIC_UNDERSCORE = frozenset({"_replace", "_asdict", "_fields", "_make"})


def _private_attributes_used_elsewhere() -> list[str]:
    """``obj._name`` where no code of the same module defines ``_name``: a module reaching into
    another's (or another package's) private attributes."""
    found: list[str] = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        defined: set[str] = set()
        used: list[tuple[int, str]] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                defined.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.add(node.id)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                defined.add(node.target.id)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                defined.add(node.value)  # __slots__ entries, getattr names
            if isinstance(node, ast.Attribute):
                if isinstance(node.ctx, ast.Store):
                    defined.add(node.attr)
                elif node.attr.startswith("_") and not node.attr.startswith("__"):
                    used.append((node.lineno, node.attr))
        rel = path.relative_to(PACKAGE)
        found += [
            f"{rel}:{line} uses .{name}"
            for line, name in used
            if name not in defined and name not in PUBLIC_UNDERSCORE
        ]
    return found


def test_no_private_attribute_of_another_module() -> None:
    assert _private_attributes_used_elsewhere() == []
