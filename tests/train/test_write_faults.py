"""File-system faults while writing (full disk, read-only folder, no permission): one sentence naming
the file, the temporary file removed, the old content kept (fsar_features._atomic, the one write helper)."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest
import torch

import fsar_features._atomic as io_module
from fsar_features import WriteError, atomic_path, atomic_write_json, atomic_write_text, describe_os_error


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("code", "says"),
    [
        (errno.ENOSPC, "no space left on the device ("),
        (errno.EDQUOT, "the disk quota is exceeded"),
        (errno.EROFS, "the file system is read-only; choose a writable folder"),
        (errno.EACCES, "permission denied"),
    ],
)
def test_a_refused_replace_names_the_file_keeps_the_old_content_and_leaves_no_temp(tmp_path, monkeypatch, code, says):
    target = tmp_path / "results.json"
    atomic_write_json(target, {"old": 1})

    def refuse(src, dst):
        raise OSError(code, os.strerror(code), str(src))  # the OS names the temporary file

    monkeypatch.setattr(io_module.os, "replace", refuse)
    with pytest.raises(WriteError) as caught:
        atomic_write_json(target, {"new": 2})
    assert str(caught.value).startswith(f"cannot write {target}: {says}")
    assert caught.value.errno == code
    assert "\n" not in str(caught.value)
    assert target.read_text() == '{\n  "old": 1\n}\n'
    assert _no_temp_files(tmp_path)


def test_a_full_disk_while_the_bytes_are_written_is_named(tmp_path, monkeypatch, full_disk_open):
    monkeypatch.setattr(io_module, "open", full_disk_open(errno.ENOSPC), raising=False)
    with pytest.raises(WriteError, match=rf"^cannot write {tmp_path / 'config.toml'}: no space left on the device"):
        atomic_write_text(tmp_path / "config.toml", "a = 1\n")
    assert not (tmp_path / "config.toml").exists()
    assert _no_temp_files(tmp_path)


def test_torch_saves_short_write_reads_as_a_full_disk_naming_the_checkpoint(tmp_path, monkeypatch):
    """torch.save raises RuntimeError('[enforce fail at inline_container.cc] unexpected pos …') on a full disk."""

    def short(obj, path):
        Path(path).write_bytes(b"PK\x03\x04")
        raise RuntimeError("[enforce fail at inline_container.cc:671] . unexpected pos 1024 vs 998")

    monkeypatch.setattr(torch, "save", short)
    short_write = r"cannot write .*best\.pt: the write came up short, most likely a full disk"
    with pytest.raises(WriteError, match=short_write), atomic_path(tmp_path / "best.pt", suffix=".pt") as tmp:
        torch.save({"w": torch.zeros(3)}, tmp)
    assert not (tmp_path / "best.pt").exists()
    assert _no_temp_files(tmp_path)


def test_a_read_only_folder_is_named_before_anything_is_written(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(WriteError, match=rf"^cannot write {tmp_path / 'last.pt'}: the file system is read-only"):
        atomic_write_text(tmp_path / "last.pt", "x")


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(ValueError, match="a bug"), atomic_path(tmp_path / "a.txt"):
        raise ValueError("a bug")
    with pytest.raises(RuntimeError, match="CUDA out of memory"), atomic_path(tmp_path / "a.txt"):
        raise RuntimeError("CUDA out of memory")
    with pytest.raises(OSError, match="Invalid argument") as caught, atomic_path(tmp_path / "a.txt"):
        raise OSError(errno.EINVAL, "Invalid argument")
    assert not isinstance(caught.value, WriteError)
    assert _no_temp_files(tmp_path)
    assert describe_os_error(OSError(errno.EINVAL, "Invalid argument")) is None


def test_both_command_lines_print_a_read_only_run_folder_as_one_sentence(tmp_path, monkeypatch, capsys):
    from fsar_apps.cli import main as apps_main
    from fsar_train.cli import main as train_main

    real_mkdir = Path.mkdir
    locked = tmp_path / "ro"

    def mkdir(self, *args, **kwargs):
        if self == locked or locked in self.parents:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    data = f"data.root='{tmp_path / 'data'}'"
    assert train_main(["run", "--run-dir", str(locked / "a"), "-o", data]) == 2
    assert apps_main(["train", "--run-dir", str(locked / "b"), "-o", data]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {locked / 'a'}: the file system is read-only; choose a writable folder" in " ".join(
        err.split()
    )
    assert f"cannot write {locked / 'b'}: the file system is read-only" in " ".join(err.split())
    assert "Traceback" not in err
