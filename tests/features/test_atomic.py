"""The one write helper (``fsar_features._atomic``): temporary names, durability, exclusive creation."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import fsar_features._atomic as atomic_module
from fsar_features import WriteError, atomic_path, atomic_write_bytes


class _Killed(BaseException):
    """Stands for the process dying mid-write (not an Exception, so nothing catches it)."""


def test_a_write_killed_before_the_rename_leaves_only_a_file_matching_the_temp_glob(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "a.bin", b"old")
    seen: list[Path] = []

    def killed_mid_write() -> None:
        with atomic_path(tmp_path / "a.bin", suffix=".pt") as tmp:
            tmp.write_bytes(b"new")
            seen.extend([tmp, *tmp_path.glob(atomic_module.TEMP_GLOB)])
            raise _Killed

    with pytest.raises(_Killed):
        killed_mid_write()
    tmp, *globbed = seen
    assert tmp.name.startswith(".a.bin.tmp-")
    assert tmp.suffix == ".pt"
    assert globbed == [tmp]
    assert (tmp_path / "a.bin").read_bytes() == b"old"


@pytest.mark.parametrize("durable", [False, True])
def test_durable_writes_fsync_the_file_and_the_folder(tmp_path: Path, monkeypatch, durable: bool) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(atomic_module.os, "fsync", fsync)
    atomic_write_bytes(tmp_path / "sub" / "a.bin", b"x", durable=durable)
    assert (tmp_path / "sub" / "a.bin").read_bytes() == b"x"
    if durable:
        assert len(synced) == 2
        assert Path(synced[0]).name.startswith(".a.bin.tmp-")  # the file, before the rename
        assert synced[1] == str(tmp_path / "sub")  # then its folder
    else:
        assert synced == []


def test_create_exclusive_creates_once_and_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "recipe.json"
    assert atomic_module.create_exclusive(target, b"first") is True
    assert atomic_module.create_exclusive(target, b"second") is False
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.json"]


def test_create_exclusive_on_a_read_only_folder_is_one_sentence(tmp_path: Path, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / ".recipe.json.tmp-x"))

    monkeypatch.setattr(atomic_module.tempfile, "mkstemp", refuse)
    with pytest.raises(WriteError, match=rf"^cannot write {tmp_path / 'recipe.json'}: the file system is read-only"):
        atomic_module.create_exclusive(tmp_path / "recipe.json", b"x")
    assert not (tmp_path / "recipe.json").exists()
