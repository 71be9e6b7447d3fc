"""Environment set-up for every test folder: standard library and pytest only.

This file must stay importable without torch, so that ``pytest tests/prompts`` runs in an
environment with only fsar-prompts, and ``pytest tests/metric`` with only fsar-metric.
"""

import builtins
import hashlib
import os
from collections.abc import Callable
from typing import Any

import pytest

# No network in tests: a hub lookup fails at once instead of after retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class _HalfWrite:
    """A file whose ``write`` puts half the bytes down, then fails with ``code`` (a disk filling up)."""

    def __init__(self, f: Any, code: int) -> None:
        self._f, self._code = f, code

    def __enter__(self) -> "_HalfWrite":
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()

    def write(self, data: bytes) -> int:
        self._f.write(data[: len(data) // 2])
        raise OSError(self._code, os.strerror(self._code))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


@pytest.fixture
def full_disk_open() -> Callable[..., Callable[..., Any]]:
    """``full_disk_open(code, target="")``: an ``open`` stand-in (to monkeypatch into a module) under
    which writing a file whose path contains ``target`` fails half-way with the OS error ``code``."""

    def make(code: int, target: str = "") -> Callable[..., Any]:
        def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            f = builtins.open(file, mode, *args, **kwargs)  # noqa: SIM115 - closed by the caller's with
            return _HalfWrite(f, code) if target in str(file) and "w" in mode else f

        return fake_open

    return make


def _state_hash(model: Any) -> str:
    """sha256 (16 hex digits) of a module's state dict: names, dtypes and bytes, in name order."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(str(value.dtype).encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@pytest.fixture
def state_hash() -> Callable[[Any], str]:
    """``state_hash(model)``: a short fingerprint of a module's weights, for hash-pinned regression tests."""
    return _state_hash
