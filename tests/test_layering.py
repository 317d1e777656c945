"""Dependencies run one way: events ← functions ← runtime.

- ``driftline.events`` (the contract) imports nothing else of Driftline's;
- ``driftline.functions`` imports the contract and the runtime's narrow interface to
  handlers (:data:`HANDLER_INTERFACE`), nothing else of the runtime;
- ``driftline.runtime`` may import both.

Every import is read from the source with :mod:`ast`, those inside functions included.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "events": "driftline.events",
    "functions": "driftline.functions",
    "runtime": "driftline.runtime",
}
HANDLER_INTERFACE = (
    "driftline.runtime.context",
    "driftline.runtime.errors",
    "driftline.runtime.function",
    # the outgoing-webhook sender the built-in notify function hands its events to (httpx
    # and standardwebhooks stay out of functions/)
    "driftline.runtime.notify",
)
CORE = ("client", "context", "errors", "function", "settings")
"""The only runtime modules ``runtime/__init__.py`` may import (the functions import it);
``client`` is the public HTTP client, which imports only httpx and the errors."""


def imports(source: str, package: str) -> Iterator[tuple[int, str]]:
    """Every module (or module.name) imported by ``source``, a module of ``package``, with its line."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from package, up level - 1
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def allowed(layer: str, imported: str) -> bool:
    """Whether code in ``layer`` (events, functions or runtime) may import ``imported``."""
    if not _within(imported, "driftline") or _within(imported, "driftline.events"):
        return True
    if layer == "runtime":
        return True
    if layer == "functions":
        imported = FRONT_DOOR.get(imported, imported)
        return any(_within(imported, m) for m in ("driftline.functions", *HANDLER_INTERFACE))
    return False


def _within(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def _front_door() -> dict[str, str]:
    """What ``from driftline.runtime import X`` reaches: the module each of its names comes from."""
    tree = ast.parse((ROOT / "runtime" / "__init__.py").read_text())
    return {
        f"driftline.runtime.{alias.asname or alias.name}": f"{node.module}.{alias.name}"
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }


FRONT_DOOR = _front_door()


def violations(layer: str) -> list[str]:
    found = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        folder = path.parent.relative_to(ROOT / layer).parts
        package = ".".join([PACKAGES[layer], *folder])
        for line, imported in imports(path.read_text(), package):
            if not allowed(layer, imported):
                found.append(f"{path.relative_to(ROOT)}:{line}: imports {imported}")
    return found


@pytest.mark.parametrize("layer", sorted(PACKAGES))
def test_imports_run_one_way(layer: str) -> None:
    bad = violations(layer)
    assert not bad, f"{layer}/ imports against the layering:\n" + "\n".join(bad)


def test_the_runtime_front_door_imports_only_the_core() -> None:
    source = (ROOT / "runtime" / "__init__.py").read_text()
    outside = [
        f"line {line}: {name}"
        for line, name in imports(source, "driftline.runtime")
        if _within(name, "driftline")
        and not _within(name, "driftline.events")
        and not any(_within(name, f"driftline.runtime.{m}") for m in CORE)
    ]
    assert not outside, "runtime/__init__.py imports beyond the core modules: " + ", ".join(outside)


@pytest.mark.parametrize(
    ("layer", "imported", "ok"),
    [
        ("events", "driftline.events.models.Event", True),
        ("events", "driftline.runtime.errors.DecodeError", False),
        ("events", "driftline.functions", False),
        ("functions", "driftline.events.Matrix", True),
        ("functions", "driftline.functions.ml.training", True),
        ("functions", "driftline.runtime.context.Context", True),
        ("functions", "driftline.runtime.errors", True),
        ("functions", "driftline.runtime.function.function", True),
        ("functions", "driftline.runtime.cluster.capabilities", False),
        ("functions", "driftline.runtime.Context", True),  # the front door, from .context
        ("functions", "driftline.runtime.Settings", False),  # the front door, from .settings
        ("functions", "driftline.runtime.settings", False),
        ("functions", "driftline.runtime.contextual", False),
        ("runtime", "driftline.functions.score.Sessions", True),
        ("runtime", "numpy", True),
    ],
)
def test_the_rule(layer: str, imported: str, ok: bool) -> None:
    assert allowed(layer, imported) is ok


def test_relative_and_nested_imports_are_seen() -> None:
    source = (
        "from . import training\n"
        "from ..score import Sessions\n"
        "import driftline.events\n"
        "def f():\n"
        "    from driftline.runtime import Context\n"
    )
    assert list(imports(source, "driftline.functions.ml")) == [
        (1, "driftline.functions.ml.training"),
        (2, "driftline.functions.score.Sessions"),
        (3, "driftline.events"),
        (5, "driftline.runtime.Context"),
    ]
