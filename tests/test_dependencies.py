"""Every package the server imports is a runtime dependency: the README's first command
installs only those (`pip install -e .`), so one that only the tests bring (httpx did) would
make `identity serve` fail on a fresh machine while the whole suite passes."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _runtime_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {
        re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]
        for requirement in project["dependencies"]
    }
    return {_canonical(name) for name in names}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_levels() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "identity").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found - {"identity", "__future__"} - set(sys.stdlib_module_names)


def test_every_package_the_server_imports_is_a_runtime_dependency() -> None:
    distributions = packages_distributions()
    required = _runtime_requirements()
    missing = {
        module: distributions.get(module, [module])
        for module in _imported_top_levels()
        if not any(_canonical(d) in required for d in distributions.get(module, [module]))
    }
    # Packages a runtime dependency brings along by its own requirements are still "ours" to
    # declare when we import them: an upgrade of the other could drop them.
    assert missing == {}, f"imported by identity/ but not in [project.dependencies]: {missing}"
