"""kill -9 of the training command, then the same command again: the run ends exactly as an
uninterrupted one (weights, history, best step), nothing the killed process wrote is lost or torn."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

TINY = [
    "-o", "synthetic.videos_per_class=6",
    "-o", "synthetic.n_frames=8",
    "-o", "synthetic.size=32",
    "-o", "train.steps=40",
    "-o", "train.episodes_per_step=2",
    "-o", "train.val_every=10",
    "-o", "train.val_episodes=10",
    "-o", "train.checkpoint_every=2",
    "-o", "train.val_train_classes=0",
    "-o", "episodes.train_queries=1",
    "-o", "features.progress=false",
]  # fmt: skip


def _train(run_dir: Path, data: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "fsar_apps.cli", "train", "--run-dir", str(run_dir), "-o", f"data.root='{data}'"]
    return subprocess.Popen([*argv, *TINY], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_a_training_killed_mid_run_resumes_to_the_uninterrupted_result(tmp_path):
    data = tmp_path / "data"
    whole = _train(tmp_path / "whole", data)  # also generates the data and extracts the features once
    out, _ = whole.communicate(timeout=900)
    assert whole.returncode == 0, out

    killed = _train(tmp_path / "killed", data)
    last = tmp_path / "killed" / "last.pt"
    deadline = time.monotonic() + 600
    while not (last.exists() and torch.load(last, weights_only=True)["step"] >= 6):
        assert killed.poll() is None, killed.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL

    again = _train(tmp_path / "killed", data)
    out, _ = again.communicate(timeout=900)
    assert again.returncode == 0, out
    for name in ("best.pt", "last.pt"):
        a = torch.load(tmp_path / "whole" / name, weights_only=True)
        b = torch.load(tmp_path / "killed" / name, weights_only=True)
        assert a["step"] == b["step"], name
        for key, tensor in a["model"].items():
            assert torch.equal(tensor, b["model"][key]), f"{name}: {key} differs after kill -9 and resume"
    assert json.loads((tmp_path / "whole" / "history.json").read_text()) == json.loads(
        (tmp_path / "killed" / "history.json").read_text()
    )
