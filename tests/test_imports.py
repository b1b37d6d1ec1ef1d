"""The package's dependency graph is visible and acyclic.

Every import of a package module is read from the source (function-level ones too): no module
may import another that imports it back, directly or through others, and outside ``cli/``
(whose subcommands import their work on use so that ``reconguard --help`` stays fast) the package
imports its own modules at module top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import reconguard

ROOT = Path(reconguard.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ("reconguard", *path.relative_to(ROOT).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name not in MODULES:
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return name


def _imports(path: Path) -> list[tuple[ast.AST, list[str], bool]]:
    """``(node, imported package modules, at module top)`` of every import statement."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        targets = sorted({t for t in map(_resolve, (n for n in names if n.startswith("reconguard"))) if t})
        if targets:
            found.append((node, targets, id(node) in top))
    return found


def _graph() -> dict[str, set[str]]:
    return {name: {t for _, targets, _ in _imports(path) for t in targets if t != name}
            for name, path in MODULES.items()}


def test_no_import_cycles():
    graph, state, stack, cycles = _graph(), {}, [], []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_own_modules_imported_at_module_top_outside_cli():
    late = [f"{path.relative_to(ROOT.parent)}:{node.lineno}" for name, path in MODULES.items()
            if not name.startswith("reconguard.cli") for node, _, at_top in _imports(path) if not at_top]
    assert not late, f"function-level imports of package modules: {late}"


def test_the_checks_see_the_imports():
    graph = _graph()
    assert "reconguard.audit.config" in graph["reconguard.audit.cells"]
    assert "reconguard.physics.operators" in graph["reconguard.physics.coils"]
