"""No import circles among the harness's modules (static scan, nothing imported).

Every `import harness...` / `from harness... import ...` in a module counts, at module level
or inside a function alike: an import moved into a function still makes a circle, it only
hides it until run time. `from harness.a import b` is an edge to the module `harness.a.b` when
that is a module, else to the package `harness.a` (its `__init__`). The implicit import of a
package's `__init__` before its submodules is not counted (every submodule would otherwise
sit in a circle with a package that re-exports it).

Run as a script to print the circles: `python tests/test_import_cycles.py`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "harness"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the harness modules it imports anywhere in its body."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in files else base)
            for target in targets:
                while target and target not in files:  # `import harness.a.b.c` of a name
                    target = target.rpartition(".")[0]
                if target.startswith("harness") and target != name:
                    graph[name].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The elementary circles of the graph, each as its modules in import order starting
    from the smallest name (Johnson-style enumeration; the graph is small)."""
    found: set[tuple[str, ...]] = set()
    order = sorted(graph)
    rank = {name: i for i, name in enumerate(order)}

    def walk(start: str, node: str, path: list[str], on_path: set[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt == start:
                found.add(tuple(path))
            elif rank[nxt] > rank[start] and nxt not in on_path:
                on_path.add(nxt)
                path.append(nxt)
                walk(start, nxt, path, on_path)
                path.pop()
                on_path.discard(nxt)

    for start in order:
        walk(start, start, [start], {start})
    return sorted(found)


def test_no_import_circles() -> None:
    found = circles(import_graph())
    assert not found, "import circles among harness modules:\n" + "\n".join(
        " -> ".join((*c, c[0])) for c in found
    )


def test_the_scan_finds_a_circle(tmp_path: Path) -> None:
    """The scanner sees circles through function-level and relative imports."""
    package = tmp_path / "harness"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "a.py").write_text("from harness.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from .c import x\n")
    (package / "sub" / "c.py").write_text("import harness.sub.a\nx = 1\n")
    (package / "d.py").write_text("from harness.sub import c\n")
    assert circles(import_graph(package)) == [("harness.sub.a", "harness.sub.b", "harness.sub.c")]


if __name__ == "__main__":
    for circle in circles(import_graph()):
        print(" -> ".join((*circle, circle[0])))
