"""Package surface: exports, py.typed, and every docstring example runs."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import fsar_features


def test_docstring_examples_run() -> None:
    modules = [fsar_features] + [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(fsar_features.__path__, prefix="fsar_features.")
        if info.name != "fsar_features.__main__"
    ]
    failed, attempted = 0, 0
    for module in modules:
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        failed += result.failed
        attempted += result.attempted
    assert attempted >= 15
    assert failed == 0


def test_public_names_are_exported_and_the_package_is_typed() -> None:
    assert all(hasattr(fsar_features, name) for name in fsar_features.__all__)
    assert (Path(fsar_features.__file__).parent / "py.typed").is_file()
