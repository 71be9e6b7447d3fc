"""The package as a whole: public surface, shipped files, docstring examples and the no-torch
isolation (fsar_prompts/__init__.py)."""

from __future__ import annotations

import doctest
import importlib
import importlib.resources
import pkgutil
import subprocess
import sys

import fsar_prompts


def test_importing_fsar_prompts_does_not_import_torch():
    # A fresh interpreter: this test process may hold torch already (the workspace venv has it).
    code = "import fsar_prompts, sys; assert 'torch' not in sys.modules, 'fsar_prompts imported torch'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_importing_fsar_prompts_imports_no_sibling_package():
    code = (
        "import fsar_prompts, sys; "
        "roots = {m.split('.')[0] for m in sys.modules}; "
        "bad = sorted(r for r in roots if r.startswith('fsar_') and r != 'fsar_prompts'); "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_public_names_are_exported_and_exist():
    assert sorted(fsar_prompts.__all__) == sorted(set(fsar_prompts.__all__))
    for name in fsar_prompts.__all__:
        assert hasattr(fsar_prompts, name), name
    for name in ("render_prompt", "normalize_label", "load_templates", "list_families", "scenario_for"):
        assert name in fsar_prompts.__all__


def test_package_ships_py_typed_and_its_data_files():
    root = importlib.resources.files("fsar_prompts")
    assert (root / "py.typed").is_file()
    assert (root / "data" / "formats.toml").is_file()
    assert (root / "data" / "benchmark_scenarios.toml").is_file()
    shipped = sorted(entry.name for entry in (root / "templates").iterdir() if entry.name.endswith(".toml"))
    assert shipped == ["appearance.toml", "generic.toml", "temporal.toml"]


def test_docstring_examples_run():
    modules = [fsar_prompts] + [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(fsar_prompts.__path__, prefix="fsar_prompts.")
    ]
    failed, attempted = 0, 0
    for module in modules:
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        failed += result.failed
        attempted += result.attempted
    assert attempted >= 20
    assert failed == 0
