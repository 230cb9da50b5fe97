"""The layout's import rules, read from the code: imports point down, never sideways or up.

Layers, top down (README "Layout"):
- entry points: ``identity.app`` (the ASGI app) and ``identity.__main__``;
- surfaces: ``web``, ``api``, ``cli``, ``openapi``, which never import one another;
- the wiring: ``identity.services`` builds every service once, for the app and the CLI;
- services: ``protocol`` (OAuth / OIDC) over ``accounts`` (the rules about people);
- shared services: every other top-level module (keys, audit, mail, limits, ...);
- storage: ``models``, ``model_base`` and every ``*_models`` module (the rows, split by noun),
  ``db`` and ``repositories``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "identity"

SURFACES = ("web", "api", "cli", "openapi")
STORAGE = ("models", "model_base", "db", "repositories")
ENTRY_POINTS = ("app", "__main__")
WIRING = "services"


def _part(module: str) -> str:
    """The top-level part of ``identity.X.Y`` (``X``), or ``""`` for ``identity`` itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(part: str) -> str:
    if part in ENTRY_POINTS:
        return "entry"
    if part in SURFACES:
        return "surface"
    if part == WIRING:
        return "wiring"
    if part in ("protocol", "accounts"):
        return part
    # Rows split by noun (admin_models, factor_models, ...) join storage without a list to grow.
    if part in STORAGE or part.endswith("_models"):
        return "storage"
    return "shared"


# Which layers each layer may import (besides its own part). Sideways between surfaces is
# refused separately below.
_MAY_IMPORT: dict[str, set[str]] = {
    "entry": {"surface", "wiring", "protocol", "accounts", "shared", "storage"},
    "surface": {"surface", "wiring", "protocol", "accounts", "shared", "storage"},
    "wiring": {"protocol", "accounts", "shared", "storage"},
    "protocol": {"accounts", "shared", "storage"},
    "accounts": {"shared", "storage"},
    "shared": {"shared", "storage"},
    "storage": {"storage"},
}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    relative = path.relative_to(root.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = PACKAGE) -> set[str]:
    """Every ``identity`` module that ``path`` imports, wherever the import statement is
    (top level, inside a function, under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path, root)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            found.add(base)
            # ``from identity import audit`` imports the module identity.audit.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    # ``identity`` itself (the package's empty __init__) is no arrow worth drawing.
    return {name for name in found if name.startswith("identity.")}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the ``identity`` modules it imports (those that exist)."""
    paths = {module_name(path, root): path for path in root.rglob("*.py")}
    return {
        module: {name for name in imports_of(path, root) if name in paths and name != module}
        for module, path in paths.items()
    }


def forbidden_arrows(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Every import that breaks the layer rules, as ``"a -> b: why"``."""
    problems = []
    for module, targets in graph.items():
        source_part = _part(module)
        source = _layer(source_part)
        for target in targets:
            target_part = _part(target)
            if target_part in ("", source_part):
                continue
            layer = _layer(target_part)
            if target_part == "cli" and module != "identity.__main__":
                problems.append(f"{module} -> {target}: only __main__ may import the CLI")
            elif layer == "entry":
                problems.append(f"{module} -> {target}: nothing imports an entry point")
            elif source == "surface" and layer == "surface":
                problems.append(f"{module} -> {target}: one surface never imports another")
            elif layer not in _MAY_IMPORT[source]:
                problems.append(f"{module} -> {target}: {source} may not import {layer}")
    return sorted(problems)


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The import cycles of ``graph`` (strongly connected components of two or more)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_imports_point_down_never_sideways_or_up() -> None:
    assert forbidden_arrows(import_graph()) == []


def test_there_is_no_import_cycle_in_identity() -> None:
    assert cycles(import_graph()) == []


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("identity.protocol.grants", "identity.web.pages"),
        ("identity.protocol.server", "identity.api.routes"),
        ("identity.accounts.service", "identity.protocol.server"),
        ("identity.accounts.profile", "identity.web.account"),
        ("identity.repositories.users", "identity.audit"),
        ("identity.models", "identity.accounts.service"),
        ("identity.federation_models", "identity.audit"),
        ("identity.model_base", "identity.config"),
        ("identity.web.pages", "identity.api.problems"),
        ("identity.api.routes", "identity.web.pages"),
        ("identity.cli.users", "identity.web.pages"),
        ("identity.openapi.document", "identity.api.routes"),
        ("identity.mail", "identity.accounts.service"),
        ("identity.web.pages", "identity.app"),
        ("identity.web.pages", "identity.cli.common"),
        ("identity.services", "identity.web.pages"),
    ],
)
def test_a_forbidden_import_is_reported(source: str, target: str) -> None:
    graph = {**import_graph(), source: {target}}
    assert any(line.startswith(f"{source} -> {target}:") for line in forbidden_arrows(graph))


def test_an_import_loop_is_reported() -> None:
    graph = {
        "identity.cli.main": {"identity.cli.audit"},
        "identity.cli.audit": {"identity.cli.main"},
    }
    assert cycles(graph) == [["identity.cli.audit", "identity.cli.main"]]


def test_the_graph_sees_imports_inside_functions(tmp_path: Path) -> None:
    package = tmp_path / "identity"
    (package / "web").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "web" / "__init__.py").write_text("")
    (package / "api.py").write_text("")
    (package / "web" / "pages.py").write_text("def f() -> None:\n    from .. import api\n")
    graph = import_graph(package)
    assert graph["identity.web.pages"] == {"identity.api"}
    assert forbidden_arrows(graph) == [
        "identity.web.pages -> identity.api: one surface never imports another"
    ]
