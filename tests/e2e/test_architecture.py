"""The package boundaries of docs/architecture.md, checked on the source: dependencies point one way,
and no package imports another package's ``_private`` module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {
    "fsar_prompts": ROOT / "packages/fsar-prompts/src/fsar_prompts",
    "fsar_metric": ROOT / "packages/fsar-metric/src/fsar_metric",
    "fsar_features": ROOT / "packages/fsar-features/src/fsar_features",
    "fsar_train": ROOT / "packages/fsar-train/src/fsar_train",
    "fsar_apps": ROOT / "apps/fsar-apps/src/fsar_apps",
}
#: package → the fsar packages it may import (docs/architecture.md's table)
ALLOWED = {
    "fsar_prompts": set(),
    "fsar_metric": set(),
    "fsar_features": {"fsar_prompts", "fsar_metric"},
    "fsar_train": {"fsar_prompts", "fsar_metric", "fsar_features"},
    "fsar_apps": {"fsar_prompts", "fsar_metric", "fsar_features", "fsar_train"},
}


def _imports(package: str) -> list[tuple[str, str]]:
    """(file, imported module) for every ``import fsar_*`` / ``from fsar_* import`` of a package."""
    found = []
    for path in sorted(SOURCES[package].rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            found += [(str(path.relative_to(ROOT)), n) for n in names if n.startswith("fsar_")]
    return found


@pytest.mark.parametrize("package", sorted(SOURCES))
def test_dependencies_point_one_way(package: str) -> None:
    wrong = [(f, m) for f, m in _imports(package) if m.split(".")[0] not in ALLOWED[package] | {package}]
    assert wrong == []


@pytest.mark.parametrize("package", sorted(SOURCES))
def test_no_package_imports_another_packages_private_modules(package: str) -> None:
    wrong = [
        (f, m)
        for f, m in _imports(package)
        if m.split(".")[0] != package and any(part.startswith("_") for part in m.split(".")[1:])
    ]
    assert wrong == []


@pytest.mark.parametrize("module", ["fsar_features", "fsar_train", "fsar_apps.store", "fsar_apps.cli"])
def test_importing_a_package_does_not_load_transformers(module: str) -> None:
    """transformers' modeling code takes seconds to import; it loads when a model is built or opened,
    so reading a cache or a store, or starting the command line, does not pay for it."""
    import subprocess
    import sys

    probe = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers'))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
