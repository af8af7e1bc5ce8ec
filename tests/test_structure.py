"""deltaprop's modules, read as source: no import circle, and no private name of one module used by another.

Static checks of the code (nothing is imported), so that neither can pass by the luck of an import order."""

from __future__ import annotations

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def _modules(root) -> dict:
    """{dotted name: (path, is a package)} of every module of deltaprop in ``root``."""
    found = {}
    for folder, _, files in os.walk(os.path.join(root, "deltaprop")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, root)[:-3].split(os.sep)
                package = parts[-1] == "__init__"
                found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def _imports(root):
    """(module, its syntax tree, [(source module, name, bound as, the module it names or None)]) per module of
    deltaprop, from every import statement, at the top or in a function (relative ones resolved)."""
    modules = _modules(root)
    for module, (path, package) in sorted(modules.items()):
        here = module if package else module.rpartition(".")[0]
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(a.name, None, a.asname, a.name) for a in node.names if a.name in modules]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = here.split(".")[: len(here.split(".")) - node.level + 1]
                    source = ".".join(parts + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source in modules:
                    found += [(source, a.name, a.asname or a.name, f"{source}.{a.name}" if f"{source}.{a.name}" in modules
                               else None) for a in node.names]
        yield module, tree, found


def import_graph(root=ROOT) -> dict:
    """{module: the deltaprop modules it imports}: a lazy import (in a function) counts, as it closes a circle
    as surely, only later. ``from P import x`` is an edge to P.x where that is a module, else to P. An import
    of one of the module's own packages is left out: Python imports a module's packages before the module
    itself, so that adds no order that was not there."""
    graph = {}
    for module, _, found in _imports(root):
        edges = {target or source for source, _, _, target in found}
        graph[module] = {m for m in edges if m != module and not module.startswith(m + ".")}
    return graph


def find_circle(graph: dict) -> list | None:
    """One circle [a, b, ..., a] of ``graph``, or None (a depth-first search)."""
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_has_no_circle():
    graph = import_graph()
    assert find_circle(graph) is None, " -> ".join(find_circle(graph))
    # the graph is read as meant: the edges that made the circles it had, and some that stay
    assert {"deltaprop.bench", "deltaprop.precompile", "deltaprop.record"} <= graph["deltaprop.cli"]
    assert "deltaprop.record" in graph["deltaprop.bench.measure"] and "deltaprop.cli" not in graph["deltaprop.bench.measure"]
    assert "deltaprop.cli" not in graph["deltaprop.precompile"]
    assert graph["deltaprop.record"] == set()  # imports nothing of deltaprop's but its package's version


def test_find_circle():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def fake_package(root, **sources) -> None:
    """A package deltaprop in ``root`` with the modules ``sources`` ({name: source})."""
    pkg = root / "deltaprop"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name, source in sources.items():
        (pkg / f"{name}.py").write_text(source)


def test_a_lazy_import_counts(tmp_path):
    """A circle made by an import inside a function (as cli -> bench -> cli was) is found."""
    fake_package(tmp_path, a="from . import b\n", b="def f():\n    from .a import x\n")
    assert find_circle(import_graph(tmp_path)) == ["deltaprop.a", "deltaprop.b", "deltaprop.a"]


def _private(name) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(root=ROOT) -> list:
    """'module: name' for each private name of a deltaprop module that another module imports, or reads as
    an attribute of the module it imported (``measure._load()``)."""
    uses = []
    for module, tree, found in _imports(root):
        bound = {alias: target for _, _, alias, target in found if target and alias}
        uses += [f"{module}: {source}.{name}" for source, name, _, target in found
                 if name and target is None and _private(name) and source != module]
        uses += [f"{module}: {bound[node.value.id]}.{node.attr}" for node in ast.walk(tree)
                 if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                 and _private(node.attr) and bound[node.value.id] != module]
    return uses


def test_no_private_name_is_used_across_modules():
    assert private_uses() == []


def test_private_uses_finds_imports_and_attributes(tmp_path):
    fake_package(tmp_path, a="def _helper():\n    pass\n\n\ndef public():\n    pass\n",
                 b="from .a import _helper, public\nfrom . import a\n\na._helper()\na.public()\n",
                 c="from .a import public as _public\n")  # a private alias of a public name is fine
    assert private_uses(tmp_path) == ["deltaprop.b: deltaprop.a._helper", "deltaprop.b: deltaprop.a._helper"]
