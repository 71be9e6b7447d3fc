"""The project's error types: what fsar raises on purpose, for the person at the keyboard.

Every error an fsar package raises deliberately (a bad value, a missing file, a damaged checkpoint,
a store made with another recipe) derives from ``FsarError``; its message is one sentence that
names what is wrong and what to do. The command lines print an ``FsarError`` as that sentence and
exit 2; any other exception is a bug and surfaces with its traceback. The concrete classes also
derive from the built-in a caller would expect (``ValueError``, ``FileNotFoundError``, ...), so
``except ValueError`` keeps working.

fsar-metric holds them because it is the package every other package may import (fsar-prompts,
which imports no sibling, raises ``fsar_prompts.PromptError``; the packages that call it turn that
into an ``InputError`` where they pass it a user's value).

Example:
    >>> from fsar_metric.errors import FsarError, InputError
    >>> try:
    ...     raise InputError("train.lr must be > 0, got -1.0")
    ... except ValueError as err:
    ...     isinstance(err, FsarError), str(err)
    (True, 'train.lr must be > 0, got -1.0')
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["FsarError", "InputError", "MissingFileError", "OutputExistsError", "as_input_error"]


class FsarError(Exception):
    """Base of every error fsar raises on purpose; ``str()`` is one sentence for the user."""


class InputError(FsarError, ValueError):
    """A value the caller gave is not acceptable: a config option, an argument, a tensor's shape, a
    file's content. The message names the value, what was expected and, where it helps, the fix."""


class MissingFileError(FsarError, FileNotFoundError):
    """A file or folder the caller named does not exist (``filename`` is set when known)."""

    def __str__(self) -> str:
        # FileNotFoundError(errno, strerror, filename) prints "[Errno 2] ..."; ours is the sentence.
        return str(self.strerror) if self.strerror else super().__str__()


class OutputExistsError(FsarError, FileExistsError):
    """An output the caller named already holds something this call would overwrite."""


@contextlib.contextmanager
def as_input_error(*types: type[Exception], context: str = "") -> Iterator[None]:
    """Raise an error of ``types`` met inside the block as an ``InputError`` (same sentence, after
    ``context``): for a package that passes a user's value to a library with its own error types
    (fsar-prompts' ``PromptError``). An ``FsarError`` passes through unchanged.

    Example:
        >>> try:
        ...     with as_input_error(KeyError, context="--family: "):
        ...         {}["qwen"]
        ... except InputError as err:
        ...     caught = err
        >>> str(caught), type(caught.__cause__).__name__
        ("--family: 'qwen'", 'KeyError')
    """
    try:
        yield
    except FsarError:
        raise
    except types as err:
        raise InputError(f"{context}{err}") from err
