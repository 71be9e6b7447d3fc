"""kill -9 of a process in the middle of store commits: what it reported committed is there, one
row per key, and the store takes the next write (Lance commits are atomic manifests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from fsar_apps.store import PrototypeStore, StoreRecipe
from fsar_features import FeatureRecipe

DIM, N_FRAMES = 16, 4

# Adds actions a0, a1, … (re-adding a0 every third step, so replacements are interrupted too) and
# prints each name once its commit returned.
_WRITER = """
import sys, types
from pathlib import Path
import torch
import fsar_apps

package = types.ModuleType("fsar_apps.store")  # the store modules without the package's heavy re-exports
package.__path__ = [str(Path(fsar_apps.__file__).parent / "store")]
sys.modules["fsar_apps.store"] = package
from fsar_apps.store._store import PrototypeStore

store = PrototypeStore.open(sys.argv[1])
gen = torch.Generator().manual_seed(0)
for i in range(10_000):
    name = "a0" if i % 3 == 2 else f"a{i}"
    store.add(name, torch.randn(4, 16, generator=gen), torch.randn(16, generator=gen), support_ids=[f"v{i}"])
    print(name, flush=True)
"""


def _kill_mid_commit(uri: str, committed_before_kill: int, extra_s: float) -> list[str]:
    """Start a writer, let it commit a few adds, SIGKILL it ``extra_s`` later; the names it reported."""
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, uri], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    reported = [proc.stdout.readline().strip() for _ in range(committed_before_kill)]
    time.sleep(extra_s)
    os.kill(proc.pid, signal.SIGKILL)
    rest, _ = proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    return reported + rest.split()


def _check(uri: str, reported: list[str]) -> None:
    store = PrototypeStore.open(uri)
    keys = [(a.tag, a.action) for a in store.list()]
    assert len(keys) == len(set(keys))  # one row per key
    assert set(reported) <= {action for _, action in keys}  # every reported commit is there
    gen = torch.Generator().manual_seed(1)
    store.add("after", torch.randn(N_FRAMES, DIM, generator=gen), torch.randn(DIM, generator=gen), support_ids=["x"])
    assert "after" in {a.action for a in store.list()}
    store.query(torch.randn(N_FRAMES, DIM, generator=gen), torch.randn(DIM, generator=gen), k=3)


def _store(tmp_path) -> str:
    uri = str(tmp_path / "store")
    features = FeatureRecipe(
        backend="tiny-video-llava", model_id="tiny", family="video-llava", dim=32, n_layers=2, layers=(2,),
        visual_pooling="mean", text_pooling="last", n_frames=N_FRAMES, sampling="uniform", sampling_seed=None,
        frame_size=32, crop_size=32, scenario="generic", roles=("query",),
    )  # fmt: skip
    PrototypeStore.open(uri, StoreRecipe(features, head_hash="h", dim=DIM, n_frames=N_FRAMES))
    return uri


@pytest.mark.parametrize("extra_s", [0.0, 0.037])
def test_a_writer_killed_mid_commit_leaves_a_consistent_store(tmp_path, extra_s):
    uri = _store(tmp_path)
    _check(uri, _kill_mid_commit(uri, 4, extra_s))


@pytest.mark.slow
def test_many_kills_at_random_moments_leave_a_consistent_store(tmp_path):
    uri = _store(tmp_path)
    rng = torch.Generator().manual_seed(0)
    for _ in range(10):
        extra = float(torch.rand(1, generator=rng)) * 0.2
        _check(uri, _kill_mid_commit(uri, 2, extra))
