"""Reading the TOML data files, shipped or user-supplied (plumbing only).

Shipped data is read through ``importlib.resources``, so it works from a wheel, an editable install
or a zip import alike. Every error names the file it came from.
"""

from __future__ import annotations

import tomllib
from collections.abc import Set as AbstractSet
from importlib.resources import files
from importlib.resources.abc import Traversable
from os import PathLike
from pathlib import Path
from typing import Any

from fsar_prompts._errors import PromptError

__all__ = ["PACKAGE", "check_keys", "read_toml", "shipped", "shipped_folder"]

PACKAGE = "fsar_prompts"


def shipped(relative: str) -> Traversable:
    """A data file inside the installed package, e.g. ``shipped("data/formats.toml")``."""
    resource = files(PACKAGE)
    for part in relative.split("/"):
        resource = resource / part
    return resource


def shipped_folder(relative: str) -> list[Traversable]:
    """The ``*.toml`` files of a folder inside the package, sorted by name (a stable load order)."""
    return sorted(
        (entry for entry in shipped(relative).iterdir() if entry.is_file() and entry.name.endswith(".toml")),
        key=lambda entry: entry.name,
    )


def read_toml(file: str | PathLike[str] | Traversable, source: str | None = None) -> tuple[dict[str, Any], str]:
    """Parse one TOML file.

    Args:
        file: a path, or a shipped resource (``shipped``).
        source: how messages and records name the file (default: ``str(file)``). Shipped files pass
            ``fsar_prompts/<path>``, which does not depend on where the package is installed.

    Returns:
        The parsed table and the file's name for messages.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not valid UTF-8 TOML; the message names the file.
    """
    source = str(file) if source is None else source
    raw = Path(file).read_bytes() if isinstance(file, (str, PathLike)) else file.read_bytes()
    try:
        return tomllib.loads(raw.decode("utf-8")), source
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise PromptError(f"{source}: not a valid TOML file: {error}") from None


def check_keys(
    table: dict[str, Any], *, required: AbstractSet[str], optional: AbstractSet[str] = frozenset(), where: str
) -> None:
    """Reject unknown and missing keys of one table.

    Raises:
        ValueError: names ``where``, the offending keys and the valid ones.
    """
    valid = required | optional
    unknown = sorted(set(table) - valid)
    if unknown:
        raise PromptError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(sorted(valid))}"
        )
    missing = sorted(required - set(table))
    if missing:
        raise PromptError(
            f"{where}: missing key(s) {', '.join(map(repr, missing))}; required keys: {', '.join(sorted(required))}"
        )
