"""Atomic file writes: the one helper every fsar package writes files through.

A file is written under a temporary name in its own folder (``.<name>.tmp-<random><suffix>``), then
renamed over its final name with ``os.replace``, so a reader (or a resumed run) sees either the old
content or the new one, never half a file. ``durable=True`` also ``fsync``-s the file before the
rename and the folder after it, so the new content survives a power cut (the feature cache's
shards and manifest fragments use it).

A write the file system refuses (a full disk, a quota, a read-only folder, no permission, and
torch.save's C++ short-write ``RuntimeError``) raises ``WriteError``: one sentence naming the file
meant (not its temporary name), the cause and what to do; the temporary file is removed and the old
content is untouched. Any other error propagates as it is.
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

from fsar_metric.errors import FsarError

__all__ = [
    "TEMP_GLOB",
    "WriteError",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "create_exclusive",
    "describe_os_error",
]

#: Every temporary file of this module matches this glob (in the folder of the file it replaces).
TEMP_GLOB = ".*.tmp-*"

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_FREE_SPACE_FIX = "free some space and run the same command again (finished work is kept)"

#: errno → (what the file system said, what the user can do). The faults a user can fix.
_OS_FAULTS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device", _FREE_SPACE_FIX),
    errno.EDQUOT: ("the disk quota is exceeded", _FREE_SPACE_FIX),
    errno.EROFS: ("the file system is read-only", "choose a writable folder"),
    errno.EACCES: ("permission denied", "choose a folder you can write to, or fix its permissions"),
    errno.EPERM: ("operation not permitted", "choose a folder you can write to, or fix its permissions"),
}

#: What torch.save's C++ writer says when a write comes up short (it raises RuntimeError, not OSError).
_TORCH_WRITE_FAILURES = ("file write failed", "unexpected pos")


class WriteError(FsarError, OSError):
    """A file could not be written; ``str()`` is one sentence naming the file, the cause and the fix.

    ``errno`` is the file system's (``EIO`` for a short write) and ``filename`` the file meant, so
    callers that handle ``OSError`` by errno keep working.
    """

    def __str__(self) -> str:
        return str(self.strerror)


def _free_space(folder: Path) -> str:
    """`` (1.5 MiB free)``, or an empty string when the folder cannot be measured."""
    try:
        return f" ({shutil.disk_usage(folder).free / 2**20:.1f} MiB free)"
    except OSError:
        return ""


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
    if err.errno in _DISK_FULL and where:
        what += _free_space(Path(where).parent)
    return f"cannot write {where}: {what}; {todo}" if where else f"{what}; {todo}"


def _write_error(err: BaseException, target: Path) -> WriteError | None:
    """The ``WriteError`` for a failed write of ``target``, or None when ``err`` is not a file-system fault."""
    if isinstance(err, WriteError):
        return err
    if isinstance(err, OSError):
        message = describe_os_error(err, target)
        return None if message is None else WriteError(err.errno, message, str(target))
    if isinstance(err, RuntimeError) and any(s in str(err) for s in _TORCH_WRITE_FAILURES):
        return WriteError(
            errno.EIO,
            f"cannot write {target}: the write came up short, most likely a full disk"
            f"{_free_space(target.parent)}; {_FREE_SPACE_FIX}",
            str(target),
        )
    return None


def _fsync(path: Path) -> None:
    """``fsync`` a file or a folder (folders: skipped where the platform cannot open them)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except IsADirectoryError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _temporary(target: Path, suffix: str) -> Iterator[Path]:
    """A temporary path beside ``target``, always removed on exit (the caller has renamed or linked
    it by then); file-system faults inside the block are raised as ``WriteError`` naming ``target``."""
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", suffix=suffix, dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
    except (OSError, RuntimeError) as err:
        fault = _write_error(err, target)
        if fault is None or fault is err:
            raise
        raise fault from err
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "", *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    Args:
        path: the file to write.
        suffix: the temporary file's suffix (for writers that pick a format by it: ``.png``, ``.mp4``).
        durable: fsync the file before the rename and the folder after it.

    Raises:
        WriteError: the file system refused the write (full disk, read-only folder, no
            permission; also torch.save's short-write error); names ``path``, not the temporary file.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_path(folder / "a.txt") as tmp:
        ...     _ = tmp.write_text("done")
        >>> (folder / "a.txt").read_text(), sorted(p.name for p in folder.iterdir())
        ('done', ['a.txt'])
    """
    target = Path(path)
    with _temporary(target, suffix) as tmp:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, target)
        if durable:
            _fsync(target.parent)


def atomic_write_bytes(path: str | Path, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (``durable``: fsync-ed, see ``atomic_path``)."""
    with atomic_path(path, durable=durable) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str, *, durable: bool = False) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def atomic_write_json(path: str | Path, data: Any, *, indent: int | None = 2, durable: bool = False) -> None:
    """Write ``data`` as JSON to ``path`` atomically (keys keep their insertion order)."""
    atomic_write_text(path, json.dumps(data, indent=indent) + "\n", durable=durable)


def create_exclusive(path: str | Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists: atomic and durable (a hard link of an
    fsync-ed temporary file), so of many processes racing to create it exactly one does.

    Returns:
        True when this call created it; False when it existed (its content is not read).

    Raises:
        WriteError: the file system refused the write.
    """
    target = Path(path)
    with _temporary(target, "") as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
        _fsync(tmp)
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        _fsync(target.parent)
    return True
