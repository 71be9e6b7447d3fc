"""The index refresh: folding rows added after the ANN indexes into them, off the write path.

From ``IndexSettings.min_rows`` rows on, the store searches IVF-PQ indexes; rows added afterwards
are searched exactly next to them until a refresh folds them in. A refresh is LanceDB's
``optimize`` (compaction plus an incremental index update; no version pruned). LanceDB 0.40 has no
index-only update in its Python API and its compaction rewrites every fragment below a million
rows, so a refresh rewrites the table: 26 s at 100,000 actions of D = 1024 on 2 cores. It does not
belong in the write that crosses ``IndexSettings.max_unindexed``; ``IndexSettings.refresh`` says
where it runs (the store's ``REFRESH_MODES``): in a detached worker process (``background``, the
default, the way ``git gc --auto`` detaches), in the write itself (``inline``), or only when asked
(``manual``: ``PrototypeStore.refresh_index()``, ``fsar store index --refresh``).

One refresh runs at a time per store and machine: its process holds an exclusive ``flock`` on a lock
file (``lock_path``) for as long as it works; the kernel drops the lock when that process ends, so a
killed refresh never blocks the next one. Each refresh records its outcome (``RefreshRecord``) in the
store's metadata table under ``refresh:<table>``.

The worker is this file run as a script (``start_background``), not ``python -m fsar_apps.store…``:
the package imports torch, lancedb and fsar's packages (seconds), this file only the standard library
and, in the worker, lancedb. It forks once: the first process takes the lock and exits at once (the write
that started it waits only for that, tens of milliseconds), the second keeps the lock, detaches and
refreshes at a lower CPU priority.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = [
    "RefreshRecord",
    "lock_path",
    "read_record",
    "refresh",
    "refresh_lock",
    "refreshing",
    "retry_conflicts",
    "start_background",
    "unindexed_rows",
]

#: What Lance says when a commit cannot be rebased on a concurrent one (e.g. a losing creator's
#: overwrite); the write is safe to try again on top of it.
CONFLICTS = ("Incompatible transaction", "Commit conflict", "Retryable commit conflict")

#: The store's metadata table (recipe, claims, threshold, refresh records).
META_TABLE = "fsar_meta"
#: The ANN index that ``unindexed`` counts against (the ``text`` index is refreshed with it).
INDEX_NAME = "vector_idx"
#: The environment variable that hands the store's ``storage_options`` (JSON) to the worker, so
#: object-store credentials never appear on a command line.
OPTIONS_ENV = "FSAR_STORE_STORAGE_OPTIONS"
#: The worker's exit status when another refresh of the store holds the lock.
_BUSY = 3
#: A background refresh needs ``flock`` and ``fork`` (POSIX); elsewhere stores refresh in-process.
_POSIX = importlib.util.find_spec("fcntl") is not None and hasattr(os, "fork")


def retry_conflicts(write: Callable[[], Any], attempts: int = 8) -> Any:
    """``write()``, tried again (with a growing pause) while Lance reports a commit conflict.

    Raises:
        RuntimeError: still conflicting after ``attempts`` tries, or any other Lance error.
    """
    for attempt in range(attempts):
        try:
            return write()
        except RuntimeError as error:
            if attempt == attempts - 1 or not any(c in str(error) for c in CONFLICTS):
                raise
            time.sleep(0.01 * 2**attempt)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class RefreshRecord:
    """The outcome of the latest index refresh of one prototype table.

    Attributes:
        ok: whether the refresh committed.
        started: when it started (UTC).
        seconds: how long it took.
        unindexed_before: rows outside the index when it started.
        unindexed_after: rows outside the index when it ended (rows added meanwhile stay outside).
        error: why it failed (one line), or None.
        where: ``background`` (a worker process) or ``this process``.
    """

    ok: bool
    started: datetime
    seconds: float
    unindexed_before: int
    unindexed_after: int
    error: str | None
    where: str

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "started": self.started.isoformat()}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RefreshRecord:
        fields = json.loads(text)
        return cls(**{**fields, "started": datetime.fromisoformat(fields["started"])})

    def describe(self) -> str:
        """One line, e.g. ``ok at 2026-11-30 10:02 UTC in 26.4 s: 2,001 rows folded in``."""
        when = f"{self.started:%Y-%m-%d %H:%M:%S} UTC ({self.where}) in {self.seconds:.1f} s"
        if not self.ok:
            return f"failed at {when}: {self.error}"
        return f"ok at {when}: {self.unindexed_before - self.unindexed_after:,} rows folded in"


def _meta_key(table_name: str) -> str:
    return f"refresh:{table_name}"


def read_record(meta_rows: dict[str, str], table_name: str) -> RefreshRecord | None:
    """The latest refresh of ``table_name`` recorded in the metadata rows (key → value), or None."""
    value = meta_rows.get(_meta_key(table_name))
    return None if value is None else RefreshRecord.from_json(value)


def unindexed_rows(table: Any) -> int:
    """Rows of ``table`` outside the ANN index of ``vector`` (searched exactly next to it); all rows
    when it has no index."""
    stats = table.index_stats(INDEX_NAME)
    return int(table.count_rows()) if stats is None else int(stats.num_unindexed_rows)


def refresh(table: Any, meta: Any, *, where: str) -> RefreshRecord:
    """Fold ``table``'s unindexed rows into its indexes now (the caller holds ``refresh_lock``).

    Compaction runs with the indexes' incremental update and prunes no version (``restore`` keeps
    working). A commit conflict with a concurrent write is retried; the outcome, success or
    failure, is recorded in ``meta`` (``RefreshRecord``).

    Raises:
        RuntimeError: Lance's error when the refresh failed (recorded first).
    """
    started, clock = datetime.now(UTC), time.perf_counter()
    before = unindexed_rows(table)
    try:
        retry_conflicts(lambda: table.optimize(cleanup_older_than=timedelta(days=365_000)))
    except BaseException as err:  # recorded for `fsar store index` (an interrupt too), then raised
        error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": ")
        _record(
            meta, table.name, RefreshRecord(False, started, time.perf_counter() - clock, before, before, error, where)
        )
        raise
    record = RefreshRecord(True, started, time.perf_counter() - clock, before, unindexed_rows(table), None, where)
    _record(meta, table.name, record)
    return record


def _record(meta: Any, table_name: str, record: RefreshRecord) -> None:
    """Upsert ``record`` into the metadata table under ``refresh:<table_name>``; a record that cannot
    be written is dropped (the refresh's own outcome, committed or raised, is what counts)."""
    import pyarrow as pa

    row = pa.Table.from_pylist([{"key": _meta_key(table_name), "value": record.to_json()}], schema=meta.schema)
    with contextlib.suppress(Exception):
        retry_conflicts(
            lambda: meta.merge_insert("key").when_matched_update_all().when_not_matched_insert_all().execute(row)
        )


def lock_path(uri: str, table_name: str) -> Path | None:
    """The refresh lock file of a store's table: in the store folder for a local store, in the
    temporary folder (named by a hash of the URI) for object storage; None for ``memory://``
    (one process) and where the system has no ``flock`` (not POSIX): such a store refreshes in the
    process that asks."""
    if uri.startswith("memory://") or not _POSIX:
        return None
    if "://" not in uri or uri.startswith("file://"):
        return Path(uri.removeprefix("file://")) / f".fsar-refresh-{table_name}.lock"
    digest = hashlib.sha256(f"{uri}\0{table_name}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"fsar-refresh-{digest}.lock"


def _try_lock(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def refreshing(path: Path | None) -> bool:
    """Whether a refresh holds the lock at ``path`` now (in any process of this machine)."""
    try:
        fd = os.open(path, os.O_RDONLY) if path is not None else None
    except OSError:  # no lock file (never refreshed) or not ours to open
        return False
    if fd is None:
        return False
    try:
        return not _try_lock(fd)  # the lock is dropped with the descriptor
    finally:
        os.close(fd)


@contextlib.contextmanager
def refresh_lock(path: Path | None, *, timeout: float | None) -> Iterator[bool]:
    """Hold the refresh lock at ``path``, waiting up to ``timeout`` seconds (None: as long as it takes).

    Yields whether the lock is held (False: another refresh still held it at the timeout). A
    ``memory://`` store (``path`` None) lives in one process: nothing to lock.
    """
    try:
        fd = None if path is None else os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a read-only store folder: no worker could have taken the lock there either
        fd = None
    if fd is None:
        yield True
        return
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        held = _try_lock(fd)
        while not held and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.05)
            held = _try_lock(fd)
        yield held
    finally:
        os.close(fd)


def start_background(uri: str, table_name: str, storage_options: dict[str, str] | None) -> bool:
    """Start a detached refresh of the store's table; False when one is already running.

    Returns once the worker holds the lock (tens of milliseconds): from then on ``refreshing``
    is True until it has finished.

    Raises:
        RuntimeError: the worker could not start (its error output is quoted).
    """
    path = lock_path(uri, table_name)
    if path is None:
        raise ValueError(f"{uri} has no refresh lock (memory:// or not POSIX): refresh it in this process")
    env = {**os.environ, OPTIONS_ENV: json.dumps(storage_options or {})}
    done = subprocess.run(
        [sys.executable, "-P", __file__, uri, table_name, str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        timeout=60,
        check=False,
    )
    if done.returncode not in (0, _BUSY):
        raise RuntimeError(f"the index refresh worker did not start: {done.stderr.decode(errors='replace').strip()}")
    return done.returncode == 0


def _worker(uri: str, table_name: str, path: Path) -> int:
    """The worker: take the lock, fork, detach and refresh (see the module docstring)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if not _try_lock(fd):
        return _BUSY
    if os.fork() > 0:
        os._exit(0)  # the starter's wait ends here; the child shares (and keeps) the lock
    os.setsid()
    log = os.open(path.with_suffix(".log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for stream in (1, 2):
        os.dup2(log, stream)
    os.close(log)
    with contextlib.suppress(OSError):
        os.nice(10)  # queries and writes of the store come first
    try:
        import lancedb

        db = lancedb.connect(uri, storage_options=json.loads(os.environ.get(OPTIONS_ENV) or "{}"))
        refresh(db.open_table(table_name), db.open_table(META_TABLE), where="background")
    except Exception:
        traceback.print_exc()  # into the log; the record in the store says what failed
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
