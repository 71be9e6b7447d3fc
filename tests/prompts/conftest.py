"""Fixtures for fsar-prompts tests: template files written under ``tmp_path``.

Standard library, pytest and fsar_prompts only: these tests run in an environment without torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def valid_entry() -> dict[str, object]:
    """A valid user template (a fresh dict); tests change one key at a time to hit each rule."""
    return {
        "id": "support-kitchen",
        "role": "support",
        "scenario": "kitchen",
        "version": 1,
        "text": 'This video shows the action "{label}". Describe the utensils.',
    }


def toml_value(value: object) -> str:
    """A TOML literal for the few value types the tests write."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML literal for {value!r}")


def template_toml(*entries: dict[str, object]) -> str:
    """A template file holding one ``[[template]]`` table per entry."""
    blocks = []
    for entry in entries:
        lines = ["[[template]]"] + [f"{key} = {toml_value(value)}" for key, value in entry.items()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


@pytest.fixture
def write_templates(tmp_path: Path) -> Callable[..., Path]:
    """Write template entries (dicts) to ``tmp_path/<name>`` and return the path."""

    def write(*entries: dict[str, object], name: str = "mine.toml") -> Path:
        path = tmp_path / name
        path.write_text(template_toml(*entries), encoding="utf-8")
        return path

    return write
