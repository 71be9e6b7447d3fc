"""Atomic file writes: a temporary file in the target folder, then ``os.replace``.

A reader (or a resumed run) never sees a half-written file: either the old content or the new one.
A write the file system refuses (a full disk, a read-only folder, no permission) raises
``WriteError``: one sentence naming the file that could not be written and what to do, with the
temporary file removed and the old content untouched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "WriteError",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "describe_os_error",
]

#: errno → (what the file system said, what the user can do). The faults a user can fix.
_OS_FAULTS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: (
        "no space left on the device",
        "free some space and run the same command again (finished work is kept)",
    ),
    errno.EDQUOT: (
        "the disk quota is exceeded",
        "free some space and run the same command again (finished work is kept)",
    ),
    errno.EROFS: ("the file system is read-only", "choose a writable folder"),
    errno.EACCES: ("permission denied", "choose a folder you can write to, or fix its permissions"),
    errno.EPERM: ("operation not permitted", "choose a folder you can write to, or fix its permissions"),
}

#: What torch.save's C++ writer says when a write comes up short (it raises RuntimeError, not OSError).
_TORCH_WRITE_FAILURES = ("file write failed", "unexpected pos")


class WriteError(OSError):
    """A file could not be written; ``str()`` is one sentence naming the file, the cause and the fix."""

    def __str__(self) -> str:
        return str(self.strerror)


def describe_os_error(err: OSError, path: str | Path | None = None) -> str | None:
    """One sentence for a file-system fault a user can fix (full disk, read-only, permissions), or None;
    a ``WriteError``'s own sentence as it is.

    Args:
        err: the error.
        path: the file meant (default: the error's own file name).

    Example:
        >>> describe_os_error(OSError(errno.EROFS, "Read-only file system", "/mnt/ro/runs/a"))
        'cannot write /mnt/ro/runs/a: the file system is read-only; choose a writable folder'
        >>> describe_os_error(OSError(errno.EINVAL, "Invalid argument")) is None
        True
    """
    if isinstance(err, WriteError) and path is None:
        return str(err)  # already the sentence
    fault = _OS_FAULTS.get(err.errno) if err.errno is not None else None
    if fault is None:
        return None
    what, todo = fault
    where = path if path is not None else err.filename
    return f"cannot write {where}: {what}; {todo}" if where else f"{what}; {todo}"


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _write_error(err: BaseException, target: Path) -> WriteError | None:
    """The ``WriteError`` for a failed write of ``target``, or None when ``err`` is not a file-system fault."""
    if isinstance(err, OSError):
        message = describe_os_error(err, target)
        return None if message is None else WriteError(err.errno, message, str(target))
    if isinstance(err, RuntimeError) and any(s in str(err) for s in _TORCH_WRITE_FAILURES):
        free = _free_bytes(target.parent)
        shown = "" if free is None else f" ({free / 2**20:.1f} MiB free)"
        return WriteError(
            errno.EIO,
            f"cannot write {target}: the write came up short, most likely a full disk{shown}; "
            "free some space and run the same command again (finished work is kept)",
            str(target),
        )
    return None


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    Raises:
        WriteError: the file system refused the write (full disk, read-only folder, no
            permission; also torch.save's short-write error); names ``path``, not the temporary file.
    """
    target = Path(path)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        yield tmp
        os.replace(tmp, target)
    except (OSError, RuntimeError) as err:
        if isinstance(err, WriteError):
            raise
        fault = _write_error(err, target)
        if fault is None:
            raise
        raise fault from err
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any, *, indent: int | None = 2) -> None:
    """Write ``data`` as JSON to ``path`` atomically (keys keep their insertion order)."""
    atomic_write_text(path, json.dumps(data, indent=indent) + "\n")
