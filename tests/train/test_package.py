"""The public surface: exports, typing marker, and every docstring example runs."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import fsar_train


def test_every_exported_name_exists_and_the_package_is_typed():
    assert sorted(fsar_train.__all__) == fsar_train.__all__
    for name in fsar_train.__all__:
        assert hasattr(fsar_train, name), name
    assert (Path(fsar_train.__file__).parent / "py.typed").is_file()
    assert "pixels" in fsar_train.list_feature_sources()


@pytest.mark.parametrize(
    "module",
    sorted(m.name for m in pkgutil.iter_modules(fsar_train.__path__, "fsar_train.") if m.name != "fsar_train.__main__"),
)
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
