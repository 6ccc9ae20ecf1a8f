"""The gateway's modules import each other in one direction: no cycle, not even through imports
made only for type checking (a cycle there is a design knot all the same, and turns into an
ImportError the day someone needs the name at run time)."""

from __future__ import annotations

import ast
from pathlib import Path

import livestats_gateway

PACKAGE = Path(livestats_gateway.__file__).parent
NAME = "livestats_gateway"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([NAME, *parts])


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's own modules that `path` imports (`from . import x` counts as importing x)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that ends where it starts, or None."""
    done: set[str] = set()
    for root in sorted(graph):
        stack = [sorted(graph[root])]  # what is left to visit below each module on the path
        on_path = [root]
        while stack:
            todo = stack[-1]
            if not todo:
                stack.pop()
                done.add(on_path.pop())
                continue
            nxt = todo.pop()
            if nxt in on_path:
                return [*on_path[on_path.index(nxt) :], nxt]
            if nxt not in done:
                stack.append(sorted(graph[nxt]))
                on_path.append(nxt)
    return None


def test_the_gateway_package_has_no_import_cycle():
    graph = import_graph()
    assert f"{NAME}.fanout.hub" in graph and f"{NAME}.app" in graph  # the walk sees the package
    assert f"{NAME}.fanout.hub" in graph[f"{NAME}.fanout.index"]  # and its relative imports
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_rooms_import_downwards_only():
    """routes/ (the endpoints) sit on top: only the app assembles them. The fan-out core knows no
    route, no access rule and not the app state; access and ops know no route."""
    graph = import_graph()
    rooms = {
        room: {m for m in graph if m.startswith(f"{NAME}.{room}.")} for room in ("routes", "access", "fanout", "ops")
    }
    assert all(rooms.values()), rooms  # each room holds modules
    top = {f"{NAME}.app", f"{NAME}.state", f"{NAME}.server", f"{NAME}.serve"}
    for module, imported in graph.items():
        if not module.startswith(f"{NAME}.routes") and module != f"{NAME}.app":
            assert not imported & rooms["routes"], (module, imported & rooms["routes"])
        if module.startswith(f"{NAME}.fanout"):
            assert not imported & (rooms["access"] | top), (module, imported & (rooms["access"] | top))


def test_the_cycle_finder_finds_a_cycle_and_passes_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
