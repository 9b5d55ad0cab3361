"""No import cycles in service/ or client/, counting imports under TYPE_CHECKING and in functions.

A cycle hidden behind TYPE_CHECKING or a function-level import still makes two modules that each
need the other to be read; the layout is meant to point one way (api → scoring → serving → engine).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"vigor_service": ROOT / "service", "vigor_client": ROOT / "client"}


def module_files() -> dict[str, Path]:
    """Dotted module name → file, for every .py under the two package folders."""
    out = {}
    for name, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([name, *parts])] = path
    return out


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `module` imports, resolved: `from pkg import sub` names pkg.sub."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            subs = [f"{source}.{alias.name}" for alias in node.names]
            targets = [s for s in subs if s in known]
            if len(targets) < len(subs):  # some names are attributes of `source` itself
                targets.append(source)
        else:
            continue
        for target in targets:
            # `import a.b.c` needs a.b.c; keep the longest prefix that is a project module.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {m: imports_of(m, p, known) for m, p in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_cycle_hidden_behind_type_checking(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n"
    )
    (pkg / "b.py").write_text("def f():\n    from . import a\n")
    (pkg / "c.py").write_text("from pkg import b\n")
    files = {"pkg": pkg / "__init__.py", "pkg.a": pkg / "a.py", "pkg.b": pkg / "b.py"}
    files["pkg.c"] = pkg / "c.py"
    edges = {m: imports_of(m, p, set(files)) for m, p in files.items()}
    assert edges["pkg.c"] == {"pkg.b"}
    assert cycles(edges) == [["pkg.a", "pkg.b"]]


def test_the_walk_sees_the_whole_tree():
    edges = graph()
    assert "vigor_service.scoring.pipeline" in edges and "vigor_client.schema" in edges
    assert "vigor_service.serving" in edges["vigor_service.scoring.pipeline"]
    assert "vigor_client.wire" in edges["vigor_service.engine.signals"]


def test_no_import_cycles_in_service_or_client():
    assert cycles(graph()) == []
