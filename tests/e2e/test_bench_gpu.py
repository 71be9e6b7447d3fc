"""benchmarks/bench_gpu.py: its ``--tiny`` CPU run takes the GPU run's code path and reports every field,
and without CUDA the full run stops with a message instead of a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # No CUDA device even on a GPU machine: these tests are about the CPU paths.
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_tiny_run_prints_the_table_and_writes_every_json_field(tmp_path):
    # One thread: two OpenMP threads spinning against other processes on a loaded 2-core machine made
    # this run take minutes instead of about 15 s.
    done = _run("--tiny", "--threads", "1", "--json", str(tmp_path / "out.json"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    for text in ("bench_gpu: tiny Video-LLaVA", "extraction", "prefix cache, batch 16", "full forward, batch 1",
                 "largest batch", "head training", "episodes/s"):  # fmt: skip
        assert text in done.stdout, f"{text!r} missing from the table:\n{done.stdout}"
    results = json.loads((tmp_path / "out.json").read_text())
    assert results["tiny"] is True
    assert results["batch_sizes"] == [1, 2, 4, 8, 16]
    model = results["model"]
    assert model["params"] > 0
    assert (model["dtype"], model["device"]) == ("float32", "cpu")
    assert model["text"]["vocab_size"] == 32064  # the 7B run's vocabulary and token ids, at a tiny width
    assert model["seq_len_query"] == 8 * model["tokens_per_frame"] + 20  # T · V video tokens + the prompt's text
    points = {(r["reuse_prefix_cache"], r["batch_size"]): r for r in results["extraction"]}
    assert set(points) == {(reuse, b) for reuse in (True, False) for b in (1, 2, 4, 8, 16)}
    for row in points.values():
        assert row["status"] == "ok", row
        assert row["videos_per_s"] > 0
        assert row["finite"]
        assert row["dim"] == 64
        assert row["peak_gib"] is None  # GPU memory only
    assert results["largest_batch"] == {"prefix_cache": 16, "full_forward": 16}
    (head,) = results["head_training"]
    assert (head["in_dim"], head["autocast"], head["episodes"]) == (64, "off", 2 * 16)  # steps 2 and 3 timed
    assert head["episodes_per_s"] > 0
    assert head["head_params"] > 0


def test_full_run_without_cuda_exits_with_a_message(tmp_path):
    done = _run(cwd=tmp_path)
    assert done.returncode == 2
    assert "no CUDA device" in done.stderr
    assert "--tiny" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())  # nothing written
