"""Every exception livestats defines is a LivestatsError and is drawn in errors.py's tree, under
the parent it really has."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import livestats_shared.errors as errors_module
from livestats_shared.errors import LivestatsError

PACKAGES = ["livestats_shared", "livestats_worker", "livestats_gateway", "livestats_cli", "livestats_fpfsim"]
# `python -m` entry points run their command on import; they define no exceptions.
ENTRY_POINTS = "__main__"


def project_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined in a livestats module, by name."""
    found: dict[str, type[BaseException]] = {}
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, package_name + "."):
            if info.name.rsplit(".", 1)[-1] == ENTRY_POINTS:
                continue
            module = importlib.import_module(info.name)
            for cls in vars(module).values():
                if inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == info.name:
                    assert cls.__name__ not in found, f"two project exceptions named {cls.__name__}"
                    found[cls.__name__] = cls
    return found


def documented_tree() -> dict[str, str | None]:
    """errors.py's docstring tree as {name: parent name}, the root's parent None."""
    doc = errors_module.__doc__ or ""
    lines = doc[doc.index("\nLivestatsError\n") + 1 :].splitlines()
    tree: dict[str, str | None] = {"LivestatsError": None}
    parents = ["LivestatsError"]  # parents[d] is the latest name drawn at depth d
    for line in lines[1:]:
        drawn = re.match(r"^((?:│   |    )*)[├└]── (\w+)", line)
        if drawn is None:
            break
        depth = len(drawn[1]) // 4 + 1
        tree[drawn[2]] = parents[depth - 1]
        parents[depth:] = [drawn[2]]
    return tree


def test_the_walk_finds_exceptions_in_every_service():
    # Positive control: one known exception from each package.
    found = project_exceptions()
    for name in ["OutboxFull", "SpawnFailed", "AuthError", "GatewayError", "ConfigError"]:
        assert name in found


def test_every_project_exception_is_a_livestats_error():
    outside = sorted(name for name, cls in project_exceptions().items() if not issubclass(cls, LivestatsError))
    assert outside == [], f"not under LivestatsError: {outside}"


def test_every_project_exception_is_in_the_documented_tree_and_nothing_else_is():
    found, tree = project_exceptions(), documented_tree()
    assert sorted(set(found) - set(tree)) == [], "add them to the tree in livestats_shared/errors.py"
    assert sorted(set(tree) - set(found)) == [], "the tree names exceptions that no longer exist"


def test_the_tree_draws_each_exception_under_its_real_parent():
    found, tree = project_exceptions(), documented_tree()
    for name, parent in tree.items():
        if parent is not None:
            bases = [b.__name__ for b in found[name].__bases__]
            assert parent in bases, f"{name} is drawn under {parent} but derives from {bases}"
