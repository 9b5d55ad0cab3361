"""The engine and the weight plane know no HTTP: nothing under service/engine/ or
service/weights/ imports fastapi or starlette, directly or through another project module.

Imports under TYPE_CHECKING and inside functions count (imports_of sees every import node).
"""

from __future__ import annotations

import ast

from .test_import_cycles import ROOT, graph, module_files

HTTP = ("fastapi", "starlette")
HTTP_FREE = ("vigor_service.engine", "vigor_service.weights")


def http_imports(path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in HTTP)
    return found


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(edges.get(module, ()))
    return seen


def offenders() -> dict[str, list[str]]:
    """Module under HTTP_FREE → the modules it reaches that import HTTP types."""
    files = module_files()
    edges = graph()
    speaks_http = {m for m, p in files.items() if http_imports(p)}
    out = {}
    for module in files:
        if module in HTTP_FREE or module.startswith(tuple(p + "." for p in HTTP_FREE)):
            bad = sorted(reachable(edges, module) & speaks_http)
            if bad:
                out[module] = bad
    return out


def test_the_checker_sees_http_imports_of_every_form(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fastapi import Request\n"
        "def g():\n    import starlette.requests\n"
    )
    assert http_imports(f) == {"fastapi", "starlette.requests"}
    assert reachable({"a": {"b"}, "b": {"c"}}, "a") == {"a", "b", "c"}


def test_the_api_layer_is_seen_speaking_http():
    assert http_imports(ROOT / "service" / "api" / "deps.py")  # the checker is not blind


def test_engine_and_weights_import_no_http_types():
    assert offenders() == {}
