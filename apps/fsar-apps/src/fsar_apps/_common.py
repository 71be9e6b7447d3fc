"""What every command module of the fsar command line shares: the consoles, the default run folder,
and the one error type a user can fix (printed as one sentence, exit status 2)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

__all__ = ["DEFAULT_RUN", "console", "err_console"]

console = Console(stderr=False)
err_console = Console(stderr=True)

DEFAULT_RUN = Path("runs/default")
